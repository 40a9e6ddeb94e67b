"""Code that only GPU workers import: torch, diffusers and peft live here.

The web process and the cpu worker never import this package.
"""

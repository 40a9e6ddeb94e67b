"""comfyui.workflow: a user's API-format ComfyUI workflow, run on a ComfyUI server."""

"""The pages of the web UI, mounted at ``/``."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from apps.web import views

app_name = "web"

urlpatterns = [
    path("", views.jobs, name="jobs"),
    path("login/", views.SignInView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("new/", views.new_video, name="new"),
    path("jobs/<uuid:job_id>/", views.job, name="job"),
    path("profiles/", views.profiles, name="profiles"),
    path("profiles/<uuid:profile_id>/delete/", views.delete_profile, name="delete-profile"),
    path("system/", views.system, name="system"),
]

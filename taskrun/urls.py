from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from runs.api import unknown_call as unknown_api_call

urlpatterns = [
    path("api/", include("runs.api_urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("monitor.urls")),
    path("", include("runs.urls")),
    # Last: any other /api/ URL is a JSON 404, not an HTML page.
    re_path(r"^api/", unknown_api_call),
]

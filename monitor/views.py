from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from monitor.health import run_checks


@never_cache
def health(request):
    healthy, checks = run_checks()
    return JsonResponse(
        {"status": "ok" if healthy else "error", "checks": checks},
        status=200 if healthy else 503,
    )

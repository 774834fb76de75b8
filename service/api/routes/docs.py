"""``/docs``: Swagger UI on the OpenAPI schema, its script and style served by this app from the installed
``fastapi-swagger`` package instead of a CDN (nothing is loaded from elsewhere)."""

from importlib.resources import files

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs/assets"

router = APIRouter(include_in_schema=False)


def assets() -> StaticFiles:
    """The Swagger UI files, to mount at :data:`ASSETS_URL`."""
    return StaticFiles(directory=str(files("fastapi_swagger") / "resources"))


@router.get("/docs")
def docs() -> HTMLResponse:
    """Swagger UI on ``/openapi.json``."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="mrisynth API",
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
    )

"""The web kit's factory and error model, on a bare app: every refusal answers alike (a Problem under /api, the
app's error page elsewhere, /login for a page that needs a login), 422 included."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient

from contracts.ledger import ChainUnavailable
from federation.web import SECURITY_HEADERS
from federation.web.app import create_web_app, untyped
from federation.web.errors import WebError, problem_responses
from federation.web.schemas import Message

router = APIRouter()


@router.get("/api/refused", response_model=Message, responses=problem_responses(409))
def refused() -> Message:
    raise WebError("not now", status=409)


@router.get("/api/items/{number}", response_model=Message, responses=problem_responses())
def item(number: int) -> Message:
    return Message(detail=str(number))


@router.get("/api/chain", response_model=Message, responses=problem_responses(503))
def chain() -> Message:
    raise ChainUnavailable("connection refused")


@router.get("/page", include_in_schema=False)
def page() -> HTMLResponse:
    raise WebError("log in first", status=401)


@router.get("/page/forbidden", include_in_schema=False)
def forbidden_page() -> HTMLResponse:
    raise WebError("not for you", status=403)


def kit_app():
    app = create_web_app("kit", static_dir=None, chain_name="the test chain",
                         error_page=lambda request, message, status: HTMLResponse(f"<p>{message}</p>", status_code=status))
    app.include_router(router)
    return TestClient(app)


def test_a_refusal_under_api_is_a_problem_with_a_sentence_and_a_code():
    answer = kit_app().get("/api/refused")
    assert answer.status_code == 409
    assert answer.json() == {"detail": "not now", "error": {"code": "conflict", "message": "not now", "status": 409}}
    assert all(answer.headers[name] == value for name, value in SECURITY_HEADERS.items())


def test_a_malformed_request_is_a_problem_too_with_every_field_listed():
    answer = kit_app().get("/api/items/seven")
    body = answer.json()
    assert answer.status_code == 422 and body["detail"].startswith("path.number: ")
    assert body["error"]["status"] == 422 and body["error"]["errors"][0]["loc"] == ["path", "number"]


def test_an_unknown_path_and_an_unreachable_chain_answer_alike():
    client = kit_app()
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    down = client.get("/api/chain")
    assert down.status_code == 503 and down.json()["detail"] == "the test chain cannot be reached: try again later"


def test_pages_show_the_error_page_and_send_a_visitor_without_a_login_to_it():
    client = kit_app()
    assert client.get("/page", follow_redirects=False).headers["location"] == "/login"
    forbidden = client.get("/page/forbidden")
    assert forbidden.status_code == 403 and forbidden.text == "<p>not for you</p>"


def test_the_openapi_document_types_every_error_answer():
    document = kit_app().app.openapi()
    assert not untyped(document)
    problem = document["paths"]["/api/refused"]["get"]["responses"]["409"]["content"]["application/json"]["schema"]
    assert problem == {"$ref": "#/components/schemas/Problem"}

"""Response models the three web APIs share (the error model is federation.web.errors.Problem)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    """A request body: unknown fields are refused (422), and so is text that is not valid Unicode."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _encodable(cls, value):
        # JSON admits lone surrogates ("\ud800"); they cannot be hashed or stored, so they are bad input.
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("must be valid Unicode text") from None
        return value


class Message(BaseModel):
    detail: str


class LoginRequest(Strict):
    token: str = Field(min_length=1, max_length=200, description="a console token (`... console-token` printed it)")


class SessionOut(BaseModel):
    name: str
    role: str
    csrf_token: str = Field(description="send it back in the X-CSRF-Token header of every POST and DELETE")
    expires_at: datetime


class WhoAmI(BaseModel):
    """Who the caller is: their token's name and role (the operator console's /api/me adds `can_operate`)."""

    name: str
    role: str

"""The JSON the service reads and writes. Unknown fields are refused (a typo never falls back to a default);
the chat endpoint takes the OpenAI chat-completions request, plus three optional sid4llm fields."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

ItemRef = StrictStr | StrictInt  # a title or an item id (as in the data), never a float or a list


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Item(BaseModel):
    item_id: str
    title: str | None
    index: int
    score: float | None = None


class RecommendRequest(_Strict):
    model: StrictStr | None = Field(default=None, description="The model version to ask (default: the default one).")
    history: list[ItemRef] | None = Field(
        default=None, description="One user's items, oldest first: titles (exact or fuzzy) or item ids. Empty: the "
                                  "cold-start list (what the model recommends to a user it knows nothing of).")
    histories: list[list[ItemRef]] | None = Field(default=None, description="The batch form: several users' histories.")
    k: StrictInt = Field(default=10, gt=0, description="Items per list.")
    exclude: list[ItemRef] = Field(default_factory=list, description="Items never to recommend (to every user).")
    exclude_history: StrictBool = Field(default=True, description="Leave the history's own items out.")
    query: StrictStr | None = Field(
        default=None, description="A request in words (\"something funny for my kids\"), read with the "
                                  "history as the chat reads it; only for models that learned the requests task.")

    @model_validator(mode="after")
    def _one_form(self) -> RecommendRequest:
        if (self.history is None) == (self.histories is None):
            raise ValueError("give exactly one of 'history' (one user) or 'histories' (a batch)")
        if self.histories is not None and not self.histories:
            raise ValueError("'histories' is empty: give at least one history")
        return self


class RecommendResponse(BaseModel):
    items: list[Item] | None = None
    results: list[list[Item]] | None = None
    model: str


class TextPart(_Strict):
    type: Literal["text"]
    text: StrictStr


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[TextPart] | None = None
    name: StrictStr | None = None
    items: list[Item] | None = Field(default=None, description="sid4llm: the items an earlier assistant turn listed "
                                                               "(sent back, they are not recommended again).")

    def text(self) -> str | None:
        if isinstance(self.content, list):
            return "\n".join(part.text for part in self.content)
        return self.content


class ChatCompletionRequest(_Strict):
    model: StrictStr | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False
    max_tokens: StrictInt | None = Field(default=None, gt=0)
    max_completion_tokens: StrictInt | None = Field(default=None, gt=0)
    n: StrictInt = Field(default=1, ge=1, le=1, description="One answer per request.")
    # Accepted so that OpenAI clients work unchanged; decoding is deterministic, so they change nothing.
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    user: str | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stream_options: dict | None = None
    # sid4llm's own fields (an OpenAI client sends them with extra_body=...).
    k: StrictInt = Field(default=5, gt=0, description="Items to recommend in the answer.")
    history: list[ItemRef] = Field(default_factory=list, description="Items the user liked, beyond those named.")
    exclude: list[ItemRef] = Field(default_factory=list, description="Items never to recommend.")

    @model_validator(mode="after")
    def _has_user_turn(self) -> ChatCompletionRequest:
        if self.messages[-1].role != "user":
            raise ValueError(f"the last message must be the user's turn, got role {self.messages[-1].role!r}")
        return self


class LoadModelRequest(_Strict):
    source: StrictStr = Field(description="A saved recommender folder on the server, or a Hub id.")
    name: StrictStr | None = Field(default=None, description="The version's name (default: the folder's name or the "
                                                             "Hub id); an existing name is replaced once it drains.")
    default: StrictBool = Field(default=True, description="Make it the version requests get when they name none.")

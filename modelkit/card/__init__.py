"""Model cards: the run's facts merged with the repository's MODEL_CARD.md, validated like the Hub does."""

from modelkit.card.render import (
    CardResult,
    UsageTarget,
    card_incomplete,
    card_todos,
    pin_usage,
    read_prose,
    release_usage,
    render_card,
    validate_card,
    write_card,
)

__all__ = [
    "CardResult",
    "UsageTarget",
    "card_incomplete",
    "card_todos",
    "pin_usage",
    "read_prose",
    "release_usage",
    "render_card",
    "validate_card",
    "write_card",
]

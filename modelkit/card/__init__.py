"""Model cards: rendered from the run's facts, validated like the Hub does, regenerated in place."""

from modelkit.card.render import (
    CardResult,
    card_todos,
    pin_usage,
    render_card,
    validate_card,
    write_card,
)

__all__ = ["CardResult", "card_todos", "pin_usage", "render_card", "validate_card", "write_card"]

"""Unresolved template variables fail loudly in the tests instead of rendering as nothing.

The test settings set the template engine's `string_if_invalid` to `UNRESOLVED` and load this
module as a builtin tag library. Only this project's own templates (the engine's DIRS) are held
to it: a miss in Django's admin or another package's template is not ours to fix, and Django
documents that some of its own templates rely on the silence.

`UNRESOLVED` is what Django hands out where a variable does not resolve (a missing name or
attribute, an attribute of None). It is an empty string, so what handles a missing value on
purpose keeps working: `{% if %}` and `{% firstof %}` never see it, and `|default:"—"` replaces
it (Django runs the filters only because the value is falsy and has no "%s"; a truthy or "%s"
value would skip them and reach the page as is). Turning it into text raises: rendering it, a
tag such as `{% url %}` using it, or a filter reading it (`|floatformat`, `|truncatechars`,
`|safe`...), unless the same expression ends in `|default`, which is how a template says "this
may be missing".

Django's `{% for %}` loops over a sequence that does not resolve as over an empty one; that is
how a removed attribute hid every reviewer of the lineage page. The `for` tag here raises
instead; a sequence that resolves to None or to nothing still loops zero times.

Not caught: a filter that never turns its value into text (`|length`, `|date`, `|yesno`) sees
an empty string, as it would in production.
"""

import sys
from pathlib import Path

from django import template
from django.conf import settings
from django.template.base import FilterExpression, Node
from django.template.defaulttags import do_for

register = template.Library()


class UnresolvedTemplateVariable(Exception):
    """A template used a variable that did not resolve: a typo or a stale attribute."""


def _template_frames() -> tuple[FilterExpression | None, Node | None]:
    """The filter expression being resolved (when a filter asked for the text) and the
    template node being rendered, nearest first on the stack."""
    expression, frame = None, sys._getframe(2)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if expression is None and isinstance(owner, FilterExpression):
            expression = owner
        if isinstance(owner, Node):
            return expression, owner
        frame = frame.f_back
    return expression, None


def _is_ours(node: Node | None) -> bool:
    origin = getattr(getattr(node, "origin", None), "name", "")
    own_dirs = [Path(d).resolve() for d in settings.TEMPLATES[0]["DIRS"]]
    return bool(origin) and any(Path(origin).resolve().is_relative_to(d) for d in own_dirs)


def _ends_in_default(expression: FilterExpression) -> bool:
    return any(func.__name__ == "default" for func, _ in expression.filters)


def _unresolved(node: Node, source: str) -> UnresolvedTemplateVariable:
    return UnresolvedTemplateVariable(
        f"{node.origin.name}, line {node.token.lineno}: "
        f"{source!r} used a variable that did not resolve"
    )


class UnresolvedVariable(str):
    """`string_if_invalid` for the tests: '' to tests and `|default`, an error as text."""

    def __str__(self) -> str:
        expression, node = _template_frames()
        if not _is_ours(node) or (expression is not None and _ends_in_default(expression)):
            return ""
        raise _unresolved(node, expression.token if expression else node.token.contents)


UNRESOLVED = UnresolvedVariable("")


class _StrictSequence:
    """The sequence of a `{% for %}`: resolved the way `{{ }}` resolves it, so that a miss
    comes back as UNRESOLVED instead of None."""

    def __init__(self, expression: FilterExpression, node: Node):
        self.expression, self.node = expression, node

    def resolve(self, context, ignore_failures: bool = False):
        value = self.expression.resolve(context)
        if isinstance(value, UnresolvedVariable):
            if _is_ours(self.node):
                raise _unresolved(self.node, self.node.token.contents)
            return None  # Django's own templates keep looping over nothing
        return value

    def __str__(self) -> str:
        return str(self.expression)


@register.tag("for")
def strict_for(parser, token):
    node = do_for(parser, token)
    node.sequence = _StrictSequence(node.sequence, node)
    return node

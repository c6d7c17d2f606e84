"""Argo's expression languages, evaluated on one machine: placeholders, expr, `when`, `depends`.

The local runner interprets Argo Workflow manifests; this package is the pure part of that:
text and values in, text and values out, no I/O. Four small languages meet in a manifest, and
each is evaluated as Argo's workflow-controller evaluates it:

- placeholders, `{{inputs.parameters.x}}` and `{{=EXPR}}`, in any string (`substitute`);
- expr-lang (github.com/expr-lang/expr) with Argo's additions (`asInt`, `asFloat`, `toJson`,
  `jsonpath`, `sprig.NAME`), inside `{{=...}}` and in `retryStrategy.expression`
  (`evaluate`);
- govaluate, in a task's or step's `when`, after its placeholders are substituted
  (`condition`);
- a DAG task's `depends` expression or `dependencies` list (`parse_depends`, `Depends`).

Where this package is stricter than Argo, it is to stop with a message where Argo would carry
on with a nil: reading a key that a map lacks is an error here, except on the left of `??` or
after `?.`, where expr-lang's nil is what the author asked for. Every error is an
`ExpressionError` that names the text, where it came from and what to do.

Its modules, each importing only those above it: `_limits` and `_errors` (shared by all),
`_values` (Go's rendering of values), `_regex` (Go's regular expressions), `_token`,
`_operators` (expr-lang's operators, shared with `when`), `_functions` (expr-lang's, Argo's and
sprig's functions), `_parse` (expr-lang's tokens, tree and parser), `_evaluate`, `_substitute`,
`_conditions` (`when`) and `_depends`.
"""

from aistack_flows.local._expr._conditions import condition
from aistack_flows.local._expr._depends import Depends, TaskResult, parse_depends
from aistack_flows.local._expr._errors import ExpressionError
from aistack_flows.local._expr._evaluate import evaluate
from aistack_flows.local._expr._limits import MAX_EXPRESSION_CHARS
from aistack_flows.local._expr._substitute import placeholders, substitute

__all__ = [
    "MAX_EXPRESSION_CHARS",
    "Depends",
    "ExpressionError",
    "TaskResult",
    "condition",
    "evaluate",
    "parse_depends",
    "placeholders",
    "substitute",
]

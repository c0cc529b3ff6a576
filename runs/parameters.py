"""Run forms from a script's own argparse, read with `ast` — the script is
never run or imported.

For callers (API, pages, commands):

``read_parameters(code: str) -> ParameterSpec``
    What the script's ``argparse.ArgumentParser`` accepts. Cached by the code
    string, so call it as often as you like. ``spec.readable`` is False when
    there is no parser or it cannot be read statically (subcommands, arguments
    added in a loop or under a condition, computed names, several parsers…);
    then ``spec.note`` says why in one sentence and callers offer the
    free-form args field with that note instead of a form. A readable spec may
    also carry a note (defaults computed at run time, exclusive options).

``spec.public() -> list[dict]``
    The CONTRACT description, ``[{"name", "kind", "type", "choices",
    "default", "required", "help"}…]``; empty when unreadable.

``params_to_argv(spec, params: dict) -> list[str]``
    Validates ``{name: value}`` (name = the argparse dest, e.g.
    ``batch_size``) and returns the argv the script expects. Values may be
    JSON values or form strings: ``None`` and ``""`` mean "not given"; numbers
    parse from strings; flags take booleans or "true"/"false"/"on"/"off";
    multi-valued parameters take a list (a string is split like a shell
    would). Raises ``ParamError`` whose ``field`` is the offending name
    (``"params"`` when the whole object is wrong) and whose str reads
    ``"batch_size: must be an integer"``.

Each ``Param`` also keeps what a form needs beyond the public description:
``option`` (``--batch-size``), ``action``, ``nargs``, ``multiple``,
``section`` (argument group title) and ``exclusive_group`` (an index into
``spec.exclusive_groups``).
"""

from __future__ import annotations

import ast
import copy
import functools
import math
import re
import shlex
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Kind = Literal["positional", "option", "flag"]
TypeName = Literal["str", "int", "float", "bool"]

# Actions whose value is on/off: they become checkboxes.
FLAG_ACTIONS = {"store_true", "store_false", "store_const", "append_const", "boolean_optional"}
VALUE_ACTIONS = {"store", "append", "extend", "count"}
SKIPPED_ACTIONS = {"help", "version"}
ARGPARSE_CONSTANTS = {
    "OPTIONAL": "?",
    "ZERO_OR_MORE": "*",
    "ONE_OR_MORE": "+",
    "REMAINDER": "...",
}
TYPE_NAMES: dict[str, TypeName] = {"int": "int", "float": "float", "str": "str"}
# argparse's own test for a value that looks like a negative number, which it
# reads as a value rather than as an option.
NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
MAX_RANGE_CHOICES = 1000
_MISSING = object()


class ParamError(ValueError):
    """A bad value for one parameter; ``field`` names it for the 400."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Unreadable(Exception):
    """The parser cannot be read from the source; the message says why."""


@dataclass(frozen=True)
class Param:
    name: str  # the argparse dest: the key in ``params``
    kind: Kind
    type: TypeName
    choices: tuple[Any, ...] | None
    default: Any
    required: bool
    help: str
    option: str | None = None  # the option string put on the command line
    option_strings: tuple[str, ...] = ()
    action: str = "store"
    nargs: str | int | None = None
    const: Any = None
    exclusive_group: int | None = None
    section: str | None = None
    default_computed: bool = False  # the default is an expression the script evaluates

    @property
    def multiple(self) -> bool:
        """Takes a list of values."""
        if self.action in ("append", "extend"):
            return True
        return self.nargs in ("*", "+", "...") or isinstance(self.nargs, int)

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "type": self.type,
            "choices": list(self.choices) if self.choices is not None else None,
            "default": _json_value(self.default),
            "required": self.required,
            "help": self.help,
        }


@dataclass(frozen=True)
class ExclusiveGroup:
    required: bool
    names: tuple[str, ...]


@dataclass(frozen=True)
class ParameterSpec:
    parameters: tuple[Param, ...] = ()
    readable: bool = False
    note: str = ""
    exclusive_groups: tuple[ExclusiveGroup, ...] = field(default=())

    def public(self) -> list[dict[str, Any]]:
        return [p.public() for p in self.parameters] if self.readable else []

    def get(self, name: str) -> Param | None:
        return next((p for p in self.parameters if p.name == name), None)


@functools.lru_cache(maxsize=256)
def read_parameters(code: str) -> ParameterSpec:
    """The arguments of the script's argparse parser, read from its source."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return ParameterSpec(note=f"The script has a syntax error (line {exc.lineno}).")
    parsers = sum(1 for node in ast.walk(tree) if _is_parser_call(node))
    if parsers == 0:
        return ParameterSpec(note="The script does not build an argparse.ArgumentParser.")
    if parsers > 1:
        return ParameterSpec(note="The script builds several argument parsers.")
    reader = _Reader(_module_constants(tree))
    try:
        reader.visit(tree)
        if reader.parser is None:
            raise Unreadable("the parser is not assigned to a plain name")
        return reader.spec()
    except Unreadable as exc:
        return ParameterSpec(note=f"The form cannot be read from the script: {exc}.")


def params_to_argv(spec: ParameterSpec, params: dict[str, Any]) -> list[str]:
    """Validate ``params`` against ``spec`` and build the script's argv."""
    if not isinstance(params, dict):
        raise ParamError("params", "must be an object of parameter names and values")
    if not params:
        return []
    if not spec.readable:
        raise ParamError("params", f"cannot be used: {spec.note} Pass args instead.")
    known = {p.name for p in spec.parameters}
    for name in params:
        if name not in known:
            raise ParamError(str(name), "unknown parameter")

    positionals: list[tuple[Param, list[str]]] = []
    options: list[str] = []
    given: set[str] = set()
    for param in spec.parameters:
        raw = params.get(param.name)
        if _blank(raw):
            if param.required:
                raise ParamError(param.name, "is required")
            if param.kind == "positional":
                positionals.append((param, []))
            continue
        if param.kind == "positional":
            values = _values(param, raw)
            positionals.append((param, [_argv_text(param, v) for v in values]))
            given.add(param.name)
        else:
            tokens = _option_tokens(param, raw)
            if tokens:
                options.extend(tokens)
                given.add(param.name)

    _check_exclusive(spec, given)
    positional_argv = _positional_argv(positionals)
    if any(v.startswith("-") and not NEGATIVE_NUMBER.match(v) for v in positional_argv):
        # argparse would take such a value for an option; after "--" it cannot.
        return [*options, "--", *positional_argv]
    return [*positional_argv, *options]


# Reading ------------------------------------------------------------------


class _Parser:
    """The parser or one of its groups: what ``add_argument`` is called on."""

    def __init__(self, section: str | None = None, exclusive: int | None = None):
        self.section = section
        self.exclusive = exclusive


class _Reader(ast.NodeVisitor):
    """Walks the module in source order, following which names hold the
    parser and its groups at each point."""

    def __init__(self, constants: dict[str, Any]):
        self.constants = constants
        self.names: dict[str, _Parser] = {}
        self.made: dict[int, _Parser] = {}  # group-creating Call nodes, by id
        self.parser: _Parser | None = None
        self.params: list[Param] = []
        self.calls: list[tuple[list[str], dict[str, ast.expr], _Parser]] = []
        self.group_required: list[bool] = []
        self.set_defaults: dict[str, ast.expr] = {}
        self.argument_default: ast.expr | None = None
        self.loop_depth = 0
        self.condition_depth = 0

    # Scopes where a call may run any number of times, or not at all.

    def _in_loop(self, node: ast.AST) -> None:
        self.loop_depth += 1
        self.generic_visit(node)
        self.loop_depth -= 1

    visit_For = visit_AsyncFor = visit_While = _in_loop
    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _in_loop

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        if _is_main_guard(node.test):
            for stmt in node.body:
                self.visit(stmt)
            self._conditional(node.orelse)
        else:
            self._conditional([*node.body, *node.orelse])

    def visit_Try(self, node: ast.Try) -> None:
        for stmt in [*node.body, *node.finalbody]:
            self.visit(stmt)
        self._conditional([*node.handlers, *node.orelse])

    def visit_Match(self, node: ast.Match) -> None:
        self.visit(node.subject)
        self._conditional(node.cases)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self._conditional([node.test, node.body, node.orelse])

    def _conditional(self, nodes: list[Any]) -> None:
        self.condition_depth += 1
        for node in nodes:
            self.visit(node)
        self.condition_depth -= 1

    # Names bound to the parser and its groups.

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        self._bind(node.targets, node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self._bind([node.target], node.value)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self._bind([node.target], node.value)

    def _bind(self, targets: list[ast.expr], value: ast.expr) -> None:
        bound = self._receiver(value)
        for target in targets:
            if isinstance(target, ast.Name):
                if bound is not None:
                    self.names[target.id] = bound
                else:
                    self.names.pop(target.id, None)
            elif bound is not None:
                raise Unreadable("the parser is kept somewhere other than a plain name")

    def _receiver(self, node: ast.expr) -> _Parser | None:
        """The parser or group that ``node`` evaluates to, if any."""
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if not isinstance(node, ast.Call):
            return None
        if id(node) in self.made:
            return self.made[id(node)]
        if _is_parser_call(node):
            if self.loop_depth or self.condition_depth:
                raise Unreadable("the parser is built in a loop or under a condition")
            self._read_parser_options(node)
            self.parser = _Parser()
            self.made[id(node)] = self.parser
            return self.parser
        func = node.func
        if not isinstance(func, ast.Attribute):
            return None
        owner = self._receiver(func.value)
        if owner is None:
            return None
        if func.attr == "add_argument_group":
            title = self._literal(node.args[0]) if node.args else None
            title = self._keyword(node, "title", title)
            made = _Parser(str(title) if title else owner.section, owner.exclusive)
        elif func.attr == "add_mutually_exclusive_group":
            if owner.exclusive is not None:
                raise Unreadable("mutually exclusive groups are nested")
            self.group_required.append(bool(self._keyword(node, "required", False)))
            made = _Parser(owner.section, len(self.group_required) - 1)
        else:
            return None
        self.made[id(node)] = made
        return made

    def _read_parser_options(self, node: ast.Call) -> None:
        for kw in node.keywords:
            if kw.arg is None:
                raise Unreadable("the parser is built from **keyword arguments")
            if kw.arg == "parents":
                raise Unreadable("the parser inherits arguments from parent parsers")
            if kw.arg == "prefix_chars" and self._literal(kw.value) != "-":
                raise Unreadable("the parser uses prefix characters other than '-'")
            if kw.arg == "argument_default":
                self.argument_default = kw.value

    # Calls on the parser.

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        owner = None
        if isinstance(func, ast.Attribute):
            owner = self._receiver(func.value)
            if func.attr == "add_argument" and owner is None:
                raise Unreadable(f"add_argument is called on '{ast.unparse(func.value)}'")
        if owner is not None and isinstance(func, ast.Attribute):
            if func.attr == "add_argument":
                self._add_argument(node, owner)
            elif func.attr == "add_subparsers":
                raise Unreadable("the script has subcommands (add_subparsers)")
            elif func.attr == "set_defaults":
                self._set_defaults(node)
        for arg in [*node.args, *(kw.value for kw in node.keywords)]:
            if self._receiver_name(arg):
                raise Unreadable(f"the parser is handed to {ast.unparse(func)}()")
        self.generic_visit(node)

    def _receiver_name(self, node: ast.expr) -> bool:
        return isinstance(node, ast.Name) and node.id in self.names

    def _set_defaults(self, node: ast.Call) -> None:
        if self.loop_depth or self.condition_depth:
            raise Unreadable("defaults are set in a loop or under a condition")
        for kw in node.keywords:
            if kw.arg is None:
                raise Unreadable("set_defaults is given **keyword arguments")
            self.set_defaults[kw.arg] = kw.value
            for i, (names, kwargs, owner) in enumerate(self.calls):
                if self.params[i].name == kw.arg:
                    param = self._param(names, {**kwargs, "default": kw.value}, owner)
                    assert param is not None
                    self.params[i] = param

    def _add_argument(self, node: ast.Call, owner: _Parser) -> None:
        if self.loop_depth:
            raise Unreadable("arguments are added in a loop")
        if self.condition_depth:
            raise Unreadable("arguments are added under a condition")
        names = []
        for arg in node.args:
            names.append(self._text(arg, "an argument's name"))
        kwargs: dict[str, ast.expr] = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise Unreadable("add_argument is given **keyword arguments")
            kwargs[kw.arg] = kw.value
        if not names:
            raise Unreadable("an argument has no name")
        param = self._param(names, kwargs, owner)
        if param is None:
            return
        if any(p.name == param.name for p in self.params):
            raise Unreadable(f"two arguments store into '{param.name}'")
        self.params.append(param)
        self.calls.append((names, kwargs, owner))

    def _param(self, names: list[str], kw: dict[str, ast.expr], owner: _Parser) -> Param | None:
        positional = not names[0].startswith("-")
        action = self._action(kw.get("action"))
        if action in SKIPPED_ACTIONS:
            return None
        help_text = self._help(kw.get("help"))
        if help_text is None:  # help=argparse.SUPPRESS: hidden from users
            return None
        if positional:
            dest = names[0]
        else:
            longs = [n for n in names if n.startswith("--")]
            dest = (longs or names)[0].lstrip("-").replace("-", "_")
        if "dest" in kw:
            dest = self._text(kw["dest"], "an argument's dest")
        nargs = self._nargs(kw.get("nargs"))
        if action == "append" and nargs is not None:
            raise Unreadable(f"'{dest}' collects lists of lists (append with nargs)")
        if positional and action not in ("store", "extend"):
            raise Unreadable(f"positional '{dest}' uses action '{action}'")

        default_node = kw.get("default", self.set_defaults.get(dest, self.argument_default))
        default, computed = self._default(default_node)
        value_type = self._type(kw.get("type"))
        choices = self._choices(kw.get("choices"))
        const = self._literal(kw["const"]) if "const" in kw else None
        required = bool(self._literal(kw["required"])) if "required" in kw else False

        kind: Kind
        if action in FLAG_ACTIONS:
            kind, value_type, choices = "flag", "bool", None
            if action == "store_true":
                default = True if default is True else False
            elif action == "store_false":
                default = False if default is False else True
            elif action in ("store_const", "append_const"):
                default = False  # on/off: whether the constant is stored
        elif action == "count":
            kind, value_type = "option", "int"
            default = default if isinstance(default, int) else 0
        else:
            kind = "positional" if positional else "option"
            if isinstance(default, str) and value_type in ("int", "float"):
                # argparse passes string defaults through type=, so do we.
                try:
                    default = _parse_number(value_type, default)
                except ValueError:
                    pass
        if positional:
            required = nargs not in ("?", "*", "...")
        return Param(
            name=dest,
            kind=kind,
            type=value_type,
            choices=choices,
            default=_frozen(default),
            required=required,
            help=_format_help(help_text, default, choices),
            option=None if positional else _preferred_option(names),
            option_strings=() if positional else tuple(names),
            action=action,
            nargs=nargs,
            const=const,
            exclusive_group=owner.exclusive,
            section=owner.section,
            default_computed=computed,
        )

    def spec(self) -> ParameterSpec:
        params = self.params
        groups = tuple(
            ExclusiveGroup(required, tuple(p.name for p in params if p.exclusive_group == i))
            for i, required in enumerate(self.group_required)
        )
        notes = []
        computed = [p.name for p in params if p.default_computed]
        if computed:
            notes.append(f"The script computes the default of {', '.join(computed)}.")
        for group in groups:
            if len(group.names) > 1:
                joined = ", ".join(group.names)
                notes.append(
                    f"One of {joined} is required."
                    if group.required
                    else f"Only one of {joined} may be given."
                )
        return ParameterSpec(tuple(params), True, " ".join(notes), groups)

    # Literal values.

    def _literal(self, node: ast.expr | None, missing: Any = None) -> Any:
        """The literal value of ``node`` (module constants resolved), else
        ``missing``."""
        if node is None:
            return None
        if isinstance(node, ast.Name) and node.id in self.constants:
            return self.constants[node.id]
        try:
            return ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
        value = _range_choices(node)
        if value is not None:
            return value
        return missing

    def _text(self, node: ast.expr, what: str) -> str:
        value = self._literal(node)
        if isinstance(node, ast.Starred) or not isinstance(value, str):
            raise Unreadable(f"{what} is computed ({ast.unparse(node)})")
        return value

    def _keyword(self, call: ast.Call, name: str, default: Any) -> Any:
        for kw in call.keywords:
            if kw.arg == name:
                return self._literal(kw.value)
        return default

    def _action(self, node: ast.expr | None) -> str:
        if node is None:
            return "store"
        if _argparse_name(node) == "BooleanOptionalAction":
            return "boolean_optional"
        value = self._literal(node)
        if isinstance(value, str) and value in FLAG_ACTIONS | VALUE_ACTIONS | SKIPPED_ACTIONS:
            return value
        raise Unreadable(f"the action '{ast.unparse(node)}' is not one taskrun knows")

    def _nargs(self, node: ast.expr | None) -> str | int | None:
        if node is None:
            return None
        name = _argparse_name(node)
        if name in ARGPARSE_CONSTANTS:
            return ARGPARSE_CONSTANTS[name]
        value = self._literal(node)
        if value in ("?", "*", "+", "...") or (isinstance(value, int) and value > 0):
            return value
        raise Unreadable(f"nargs={ast.unparse(node)} cannot be read")

    def _default(self, node: ast.expr | None) -> tuple[Any, bool]:
        """The default and whether the script computes it at run time."""
        if node is None or _argparse_name(node) == "SUPPRESS":
            return None, False
        value = self._literal(node, missing=_MISSING)
        if value is _MISSING:
            return None, True
        return value, False

    def _type(self, node: ast.expr | None) -> TypeName:
        if isinstance(node, ast.Name):
            return TYPE_NAMES.get(node.id, "str")
        return "str"

    def _choices(self, node: ast.expr | None) -> tuple[Any, ...] | None:
        if node is None:
            return None
        value = self._literal(node)
        if isinstance(value, list | tuple | set | frozenset | range):
            items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
            return tuple(items)
        if isinstance(value, dict):
            return tuple(value)
        # Computed choices: the script itself will check them.
        return None

    def _help(self, node: ast.expr | None) -> str | None:
        if node is None:
            return ""
        if _argparse_name(node) == "SUPPRESS":
            return None
        value = self._literal(node)
        if isinstance(value, str):
            return value
        if isinstance(node, ast.JoinedStr):
            # f"... {X} ...": show the expression rather than nothing.
            return "".join(
                str(part.value)
                if isinstance(part, ast.Constant)
                else "{" + ast.unparse(part.value) + "}"
                for part in node.values
                if isinstance(part, ast.Constant | ast.FormattedValue)
            )
        return ""


def _is_parser_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    return name == "ArgumentParser"


def _argparse_name(node: ast.expr) -> str | None:
    """``argparse.X`` or a bare ``X`` imported from argparse."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _is_main_guard(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def _module_constants(tree: ast.Module) -> dict[str, Any]:
    """Top-level names assigned a literal exactly once (``MODES = [...]``),
    so that ``choices=MODES`` reads as well as the literal would."""
    values: dict[str, Any] = {}
    assigned: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        assigned[name.id] = assigned.get(name.id, 0) + 1
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            continue
        if isinstance(target, ast.Name) and assigned.get(target.id) == 1:
            try:
                values[target.id] = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                pass
    return values


def _range_choices(node: ast.expr) -> range | None:
    """``range(1, 6)`` with literal bounds, a common way to write choices."""
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "range"
        and not node.keywords
        and 1 <= len(node.args) <= 3
    ):
        return None
    try:
        bounds = [ast.literal_eval(arg) for arg in node.args]
    except (ValueError, TypeError, SyntaxError):
        return None
    if not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
        return None
    try:
        result = range(*bounds)
    except ValueError:
        return None
    return result if len(result) <= MAX_RANGE_CHOICES else None


def _preferred_option(names: list[str]) -> str:
    longs = [n for n in names if n.startswith("--")]
    return (longs or names)[0]


def _format_help(text: str, default: Any, choices: tuple[Any, ...] | None) -> str:
    """argparse expands %(default)s and friends in help; show what it would."""
    if "%" not in text:
        return text
    values = {"default": default, "choices": ", ".join(map(str, choices or ()))}
    try:
        return text % values
    except (KeyError, ValueError, TypeError):
        return text


def _json_value(value: Any) -> Any:
    """A fresh JSON-shaped copy: tuples read back as lists."""
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return copy.deepcopy(value)


def _frozen(value: Any) -> Any:
    """Lists become tuples: specs are cached and shared between callers."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


# Building argv -------------------------------------------------------------


def _blank(value: Any) -> bool:
    return value is None or value == "" or value == []


def _values(param: Param, raw: Any) -> list[Any]:
    """The converted, checked value(s) of a value-taking parameter."""
    if not param.multiple:
        if isinstance(raw, list | tuple):
            raise ParamError(param.name, "takes a single value, not a list")
        return [_convert(param, raw)]
    if isinstance(raw, str):
        try:
            raw = shlex.split(raw)
        except ValueError as exc:
            raise ParamError(param.name, f"cannot be split into values ({exc})") from None
    elif not isinstance(raw, list | tuple):
        raw = [raw]
    values = [_convert(param, item) for item in raw]
    if param.nargs == "+" and not values:
        raise ParamError(param.name, "needs at least one value")
    if isinstance(param.nargs, int) and len(values) != param.nargs:
        raise ParamError(param.name, f"needs exactly {param.nargs} values")
    return values


def _convert(param: Param, raw: Any) -> Any:
    if isinstance(raw, dict | list | tuple):
        raise ParamError(param.name, "must be a single value")
    if param.type in ("int", "float"):
        if isinstance(raw, bool):
            raise ParamError(param.name, _type_message(param.type))
        try:
            value = _parse_number(param.type, raw)
        except (ValueError, OverflowError):
            raise ParamError(param.name, _type_message(param.type)) from None
    else:
        if isinstance(raw, bool):
            raise ParamError(param.name, "must be text")
        value = raw if isinstance(raw, str) else str(raw)
        if "\x00" in value:
            raise ParamError(param.name, "must not contain NUL characters")
    if param.choices is not None and value not in param.choices:
        raise ParamError(param.name, "must be one of: " + ", ".join(map(str, param.choices)))
    return value


def _parse_number(type_name: str, raw: Any) -> int | float:
    if type_name == "int":
        if isinstance(raw, float):
            if not raw.is_integer():
                raise ValueError(raw)
            return int(raw)
        if isinstance(raw, int):
            return raw
        return int(str(raw).strip())
    value = float(raw.strip() if isinstance(raw, str) else raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value


def _type_message(type_name: str) -> str:
    return "must be an integer" if type_name == "int" else "must be a number"


def _argv_text(param: Param, value: Any) -> str:
    if param.type == "float":
        return repr(float(value))
    return str(value)


def _as_bool(param: Param, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in ("true", "on", "yes", "1"):
            return True
        if text in ("false", "off", "no", "0"):
            return False
    raise ParamError(param.name, "must be true or false")


def _option_tokens(param: Param, raw: Any) -> list[str]:
    option = param.option or param.name
    if param.kind == "flag":
        value = _as_bool(param, raw)
        if param.action == "boolean_optional":
            if param.default is not None and value == bool(param.default):
                return []
            return [option if value else "--no-" + option.lstrip("-")]
        if value == param.default:
            return []
        # store_true with default True (or the like) has no way to say "off".
        on = param.action != "store_false"
        if value != on:
            raise ParamError(param.name, f"cannot be set to {str(value).lower()}")
        return [option]
    if param.action == "count":
        times = _convert(replace(param, choices=None), raw)
        if times < 0:
            raise ParamError(param.name, "must not be negative")
        return [option] * times if times != param.default else []
    values = _values(param, raw)
    texts = [_argv_text(param, v) for v in values]
    if param.action in ("append", "extend"):
        return [token for text in texts for token in _option_value(option, text)]
    if len(texts) == 1:
        return _option_value(option, texts[0])
    for text in texts:
        if text.startswith("-") and not NEGATIVE_NUMBER.match(text):
            raise ParamError(param.name, f"a value in a list cannot start with '-': {text}")
    return [option, *texts]


def _option_value(option: str, text: str) -> list[str]:
    if text.startswith("-"):
        # Glued on, so argparse cannot mistake the value for an option.
        return [f"{option}={text}" if option.startswith("--") else option + text]
    return [option, text]


def _positional_argv(positionals: list[tuple[Param, list[str]]]) -> list[str]:
    argv: list[str] = []
    skipped: Param | None = None
    for param, texts in positionals:
        if not texts:
            if not param.required:
                skipped = skipped or param
            continue
        if skipped is not None and not param.required:
            # argparse fills optional positionals in order, so this value
            # would land in the skipped one.
            raise ParamError(param.name, f"cannot be given without {skipped.name}")
        argv.extend(texts)
    return argv


def _check_exclusive(spec: ParameterSpec, given: set[str]) -> None:
    for group in spec.exclusive_groups:
        chosen = [name for name in group.names if name in given]
        if len(chosen) > 1:
            raise ParamError(chosen[1], f"cannot be used together with {chosen[0]}")
        if group.required and not chosen and group.names:
            raise ParamError(group.names[0], f"one of {', '.join(group.names)} is required")

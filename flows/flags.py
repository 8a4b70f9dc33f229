"""Command-line flags made from the run configuration's schema.

Every field of a config section is a flag of the command that runs its stage: ``train.epochs`` is
``indextts-train train --epochs``, ``train.lora_rank`` is ``--lora-rank``, with the field's
description as the help text and its default shown.  A field added to a section is a flag without
another edit.  The seed guide's own flag names are declared on the field they set
(``Field(..., json_schema_extra={"flags": ["--output-dir"]})``) and work as aliases.

:func:`config_flags` decorates a command: the command declares only what is not a config field
(local paths to read or write, output choices), receives ``flags``, the config keys given on the
command line (dotted key -> value), and passes them to :func:`flows.cli_support.load_run_config`.
A field the command declares itself under the same flag name (a path it publishes) is left to the
command.  Values are checked twice: by the flag's type here, then by the section's validators.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from indextts_core.config import PipelineConfig

F = TypeVar("F", bound=Callable[..., Any])

#: Plain types a flag can carry as they are.
_SCALARS = (bool, int, float, str, Path)


@dataclass(frozen=True)
class Flag:
    key: str  # the config key it sets, e.g. "train.epochs"
    param: str  # the Python parameter of the generated command, e.g. "train__epochs"
    names: tuple[str, ...]  # "--epochs" and any declared aliases
    annotation: Any  # Annotated[<type> | None, typer.Option(...)]


class FlagValues(dict):
    """The config keys given as flags (dotted key -> value), with the flag that gave each (``names``)."""

    def __init__(self, values: dict[str, Any], names: dict[str, str]):
        super().__init__(values)
        self.names = names


def _flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _cli_type(annotation: Any) -> tuple[Any, str | None] | None:
    """The flag type for a field's annotation and a metavar for unions (None: not a command-line value).

    ``int | Literal["auto"]`` becomes text checked by the section (``8`` and ``auto`` both pass)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:  # PositiveInt and friends
        return _cli_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _cli_type(args[0])
        inner = [_cli_type(a) for a in args]
        if any(i is None or typing.get_origin(i[0]) is list for i in inner):
            return None
        choices = "|".join(i[1] or getattr(i[0], "__name__", "text") for i in inner)
        return str, choices
    if origin is Literal:
        values = typing.get_args(annotation)
        if all(isinstance(v, str) for v in values):
            return annotation, "|".join(values)
        return None
    if origin is list:
        (item,) = typing.get_args(annotation)
        return (list[item], f"<{item.__name__}>...") if item in _SCALARS and item is not bool else None
    if annotation in _SCALARS:
        return annotation, None
    return None  # sections, secrets, mappings: YAML or --set only


def _help(key: str, info: FieldInfo) -> str:
    text = (info.description or "").rstrip(".")
    if typing.get_origin(info.annotation) is list or list in map(typing.get_origin, typing.get_args(info.annotation)):
        text += " (repeatable)"
    default = info.get_default(call_default_factory=True)
    shown = f"{key}; default {default}" if default not in (None, [], {}) else key
    return f"{text} [{shown}]" if text else f"[{shown}]"


def _field_flag(key: str, info: FieldInfo) -> Flag | None:
    kind = _cli_type(info.annotation)
    if kind is None:
        return None
    cli_type, metavar = kind
    field = key.rpartition(".")[2]
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    aliases = tuple(extra.get("flags", ()))
    if cli_type is bool:
        names = (f"{_flag_name(field)}/--no-{field.replace('_', '-')}",)
        option = typer.Option(*names, help=_help(key, info), show_default=False)
    else:
        names = (_flag_name(field), *aliases)
        option = typer.Option(*names, help=_help(key, info), metavar=metavar, show_default=False)
    return Flag(key, key.replace(".", "__"), names, Annotated[cli_type | None, option])


def section_flags(selector: str, schema: type[BaseModel] = PipelineConfig) -> list[Flag]:
    """The flags of one section (``"train"``) or of one field (``"run.seed"``, ``"language"``) of ``schema``."""
    section, dot, field = selector.partition(".")
    top = schema.model_fields
    if not dot and selector in top and isinstance(top[selector].annotation, type) \
            and issubclass(top[selector].annotation, BaseModel):
        fields = top[selector].annotation.model_fields
        return [f for name, info in fields.items() if (f := _field_flag(f"{selector}.{name}", info)) is not None]
    if not dot:
        info = top[selector]
    else:
        info = top[section].annotation.model_fields[field]  # type: ignore[union-attr]
    flag = _field_flag(selector, info)
    if flag is None:
        raise TypeError(f"{selector}: not a command-line value")
    return [flag]


def _option_names(param: inspect.Parameter) -> set[str]:
    """The flag names a command's own parameter answers to."""
    names = {_flag_name(param.name)}
    for meta in getattr(param.annotation, "__metadata__", ()):
        for decl in getattr(meta, "param_decls", None) or ():
            names.update(d for part in decl.split("/") for d in [part.strip()] if d.startswith("--"))
        default = getattr(meta, "default", None)
        if isinstance(default, str) and default.startswith("--"):
            names.update(part.strip() for part in default.split("/"))
    return names


def config_flags(*selectors: str, exclude: Iterable[str] = (),
                 schema: type[BaseModel] = PipelineConfig) -> Callable[[F], F]:
    """Give a command one flag per field of ``selectors`` (sections or single fields), except ``exclude``
    (config keys).  The command receives the ones given as ``flags`` (dotted key -> value)."""
    skipped = set(exclude)
    wanted = [f for s in selectors for f in section_flags(s, schema) if f.key not in skipped]

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "flags"]
        taken = set().union(*(_option_names(p) for p in own))
        flags: list[Flag] = []
        for flag in wanted:
            names = {n for name in flag.names for n in name.split("/")}
            if names & taken:
                continue  # the command declares this flag itself (a path it publishes, say)
            taken |= names
            flags.append(flag)

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            given = {f.key: kwargs.pop(f.param) for f in flags}
            return command(**kwargs, flags=FlagValues({k: v for k, v in given.items() if v is not None}, names))

        names = {f.key: f.names[0].split("/")[0] for f in flags}
        params = own + [inspect.Parameter(f.param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                          annotation=f.annotation) for f in flags]
        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        wrapper.config_flags = tuple(flags)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate

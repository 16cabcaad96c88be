"""`rewardsteer run`: its options are `RunSpec`'s fields (help, ranges and choices from the spec's metadata); the
command turns the options given into a RunSpec and hands it to `rewardsteer.runs.execute`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..runs.spec import RunSpec, by_name, spec_fields
from ..safety import writable_out_option


class SectionedCommand(click.Command):
    """A command whose --help lists its options under headings; unlisted options go under "Other options"."""

    sections: dict[str, tuple[str, ...]] = {}

    def format_options(self, ctx, formatter):
        help_option = self.get_help_option(ctx)  # named differently across click versions: call it "help"
        records = {"help" if p is help_option else p.name: p.get_help_record(ctx) for p in self.get_params(ctx)}
        listed = {name for names in self.sections.values() for name in names}
        groups = list(self.sections.items())
        groups.append(("Other options", tuple(n for n in records if n not in listed)))
        for title, names in groups:
            rows = [records[n] for n in names if records.get(n)]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def spec_sections() -> dict[str, tuple[str, ...]]:
    """--help headings in the spec's field order, then Output."""
    sections: dict[str, list[str]] = {}
    for f in spec_fields():
        sections.setdefault(f.metadata["section"], []).append(f.name)
    return {**{k: tuple(v) for k, v in sections.items()}, "Output": ("out", "progress", "help")}


class RunCommand(SectionedCommand):
    sections = spec_sections()


def spec_option(f):
    """The click option of one RunSpec field: `--key` (a bool gets its off switch), typed and ranged as the spec."""
    m = f.metadata
    flag = "--" + m["key"].replace("_", "-")
    kind = f.type.split(" |")[0]
    shown = m["shown"] if m["shown"] is not None else f.default is not None
    if kind == "bool":
        return click.option(f"{flag}/--{m['off'].replace('_', '-')}", f.name, default=f.default, show_default=True,
                            help=m["help"])
    if kind == "tuple[str, ...]":
        return click.option(flag, f.name, multiple=True, help=m["help"], show_default=shown)
    # values stay strings here: RunSpec converts and checks them, so the CLI, a jobs file and the web page give
    # the same one-line message for the same bad value
    if m["choices"]:
        metavar = "[" + "|".join(m["choices"]) + "]"
    elif m["low"] is not None or m["high"] is not None:
        metavar = kind.upper() + " " + ("[" + (f"{m['low']}<=x" if m["low"] is not None else "x") +
                                        (f"<={m['high']}" if m["high"] is not None else "") + "]")
    else:
        metavar = {"int": "INTEGER", "float": "FLOAT"}.get(kind, "TEXT")
    return click.option(flag, f.name, type=str, metavar=metavar, default=f.default, show_default=shown, help=m["help"])


def given_options(ctx: click.Context, params: dict) -> dict:
    """The options set on the command line (not left at their defaults), by job key."""
    fields = by_name()
    return {fields[name].metadata["key"]: value for name, value in params.items()
            if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}


def run_options(fn):
    for f in reversed(spec_fields()):
        fn = spec_option(f)(fn)
    return fn


@click.command(cls=RunCommand)
@run_options
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/latest"), show_default=True,
              callback=writable_out_option)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.pass_context
def run(ctx, out, progress, **params):
    """Steer a bundled generator (or a diffusers pipeline) toward a reward; write grid.png, trace.png and
    result.json to --out."""
    from ..runs import execute

    spec = RunSpec.from_dict(given_options(ctx, params))
    result = execute(spec, out, progress=progress, log=lambda line: click.echo(line, err=True))
    click.echo(str(result.summary()))
    click.echo("wrote " + ", ".join(str(p) for p in result.files.values()))
    if result.stopped == "interrupted":
        sys.exit(130)

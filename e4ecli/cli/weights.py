"""`e4e weights list | download NAME | path NAME`: the published checkpoints and the local cache."""
from __future__ import annotations

from typing import List, NoReturn, Optional

import typer

from e4ecli.cli.app import App
from e4ecli.hub import zoo

EXIT_FAILED = 1

weights_app = App(
    help=(
        "Published checkpoints (e4e encoders, the FFHQ generator, loss networks): list them, "
        "download them into the cache ($E4E_HOME, default ~/.cache/e4ecli), print their paths."
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_error(message: "str | BaseException") -> None:
    """Print `error: message` to stderr, unwrapped so that paths and URLs can be copied (an error laid out on
    several lines keeps its lines)."""
    from rich.console import Console
    from e4ecli.cli.common import error_text

    Console(stderr=True, highlight=False, soft_wrap=True, emoji=False).print(error_text(message))


def _fail(message: "str | BaseException") -> NoReturn:
    """Print `error: message` to stderr and exit 1."""
    _print_error(message)
    raise typer.Exit(EXIT_FAILED)


@weights_app.command(
    "list",
    epilog="Examples:\n\n  e4e weights list\n\n  E4E_HOME=/data/e4e e4e weights list",
)
def list_cmd() -> None:
    """Show every zoo entry: name, kind, domain, size, whether it is cached, and its cache path."""
    from rich.console import Console
    from e4ecli.cli.common import escape
    from rich.table import Table

    try:
        registry = zoo.entries()
    except zoo.ZooError as e:
        _fail(e)
    table = Table(title=f"weights zoo (cache: {escape(str(zoo.cache_dir()))})", title_justify="left")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("kind")
    table.add_column("domain")
    table.add_column("size", justify="right")
    table.add_column("licence", no_wrap=True)
    table.add_column("cached", justify="center")
    table.add_column("path", overflow="fold")
    for entry in registry.values():
        cached = zoo.is_cached(entry)
        table.add_row(
            entry.name,
            entry.kind,
            entry.domain,
            zoo.human_size(entry.path.stat().st_size) if cached else zoo.published_size(entry),
            escape(entry.licence or "-"),
            "[green]yes[/]" if cached else "no",
            escape(str(entry.path)),
        )
    Console(highlight=False, emoji=False).print(table)


@weights_app.command(
    "download",
    epilog=(
        "Examples:\n\n"
        "  e4e weights download e4e_ffhq_encode\n\n"
        "  e4e weights download all\n\n"
        "  e4e weights download stylegan2_ffhq_1024 --url https://example.org/stylegan2-ffhq-config-f.pt\n\n"
        "A URL can also be given per entry in E4E_URL_<NAME>, e.g. E4E_URL_E4E_FFHQ_ENCODE; E4E_MIRROR=https://host/weights "
        "makes every download try https://host/weights/<file name> first. Sources may be http(s) URLs, Google Drive "
        "links, gdrive:<id> or hf:<owner>/<repo>/<path> (Hugging Face Hub, at $HF_ENDPOINT)."
    ),
)
def download_cmd(
    names: List[str] = typer.Argument(..., help="Zoo names (see `e4e weights list`), or 'all'.", show_default=False),
    url: Optional[str] = typer.Option(
        None,
        "--url",
        help=(
            "Fetch from this URL (http(s), a Google Drive link or gdrive:<id>) instead of the zoo's mirrors; "
            "add --force to replace a cached file."
        ),
    ),
    force: bool = typer.Option(False, "--force", help="Download again even if the file is cached (partial files are discarded)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Download weights into the cache (resuming partial downloads) and print where they are."""
    if names == ["all"]:
        names = list(zoo.entries())
    if url and len(names) != 1:
        _fail("--url applies to one name at a time")
    for name in names:  # refuse unknown names before fetching anything
        try:
            zoo.lookup(name)
        except zoo.ZooError as e:
            _fail(e)
    if url:
        try:
            zoo.check_override(url, "--url")
        except zoo.ZooError as e:
            _fail(e)
    failed = []
    for name in names:
        try:
            path = zoo.download(name, url=url, force=force, progress=not quiet)
        except zoo.ZooError as e:
            failed.append(name)
            _print_error(e)
            continue
        typer.echo(str(path))
    if failed and len(names) > 1:
        _fail(f"{len(failed)} of {len(names)} downloads failed: {', '.join(failed)}")
    if failed:
        raise typer.Exit(EXIT_FAILED)


@weights_app.command(
    "path",
    epilog="Examples:\n\n  e4e weights path e4e_ffhq_encode\n\n  ls -l \"$(e4e weights path stylegan2_ffhq_1024)\"",
)
def path_cmd(
    name: str = typer.Argument(..., help="A zoo name (see `e4e weights list`).", show_default=False),
) -> None:
    """Print the cached file's path; if it is not cached, say which file to place where (exit 1)."""
    try:
        path = zoo.resolve(name, download=False)
    except zoo.ZooError as e:
        _fail(e)
    typer.echo(str(path))

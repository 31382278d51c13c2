"""What every scenetools command shares: exit codes, one-line errors, --debug, --quiet.

* exit 0 on success, 1 on a runtime failure (a full disk: ``FILE: no space left on
  device``), 2 on bad usage or bad input (a corrupt file too), 130 on Ctrl-C;
* errors are one line on stderr, ``PROG: error: FILE: PROBLEM``; ``--debug`` adds the
  traceback;
* progress goes to stderr (tqdm on a terminal, log lines otherwise, nothing with --quiet).
"""
from __future__ import annotations

import functools
import sys
import traceback

import click

from .. import progress
from ..errors import Failure


def options(command):
    """Add ``--quiet`` and ``--debug`` to a click callback and apply them."""

    @click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
    @click.option("--quiet", "-q", is_flag=True, help="No progress output.")
    @functools.wraps(command)
    def wrapper(*args, debug, quiet, **kwargs):
        progress.configure(quiet=quiet)
        return command(*args, **kwargs)

    return wrapper


#: ``--precision`` of the commands that run a trained model (scene-eval, scene-render).
precision_option = click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
                                help="bf16: autocast where the device does bf16 natively (faster; figures and "
                                     "pictures differ slightly from fp32).")


def entry_point(command: click.Command):
    """Turn a click command into a console-script function with the scenetools exit codes."""

    def main(argv=None) -> None:
        argv = sys.argv[1:] if argv is None else list(argv)
        prog = command.name
        try:
            command.main(args=argv, prog_name=prog, standalone_mode=False)
        except click.exceptions.Exit as done:  # --help
            sys.exit(done.exit_code)
        except click.exceptions.Abort:
            sys.exit(130)
        except click.ClickException as error:  # bad usage: unknown option, missing file, ...
            fail(prog, f"{error.format_message()} (see {prog} --help)", 2, "--debug" in argv)
        except Failure as error:  # BadInput (2), WriteError (1)
            fail(prog, str(error), error.exit_status, "--debug" in argv)
        except KeyboardInterrupt as stop:  # its message says what was saved, if anything
            print(f"{prog}: {stop or 'interrupted'}", file=sys.stderr)
            sys.exit(130)
        except BrokenPipeError:  # the reader of our stdout went away
            sys.exit(1)
        except Exception as error:  # noqa: BLE001 - every other failure is a runtime failure
            fail(prog, f"{type(error).__name__}: {error}", 1, "--debug" in argv)
        sys.exit(0)

    main.command = command
    return main


def fail(prog: str, message: str, code: int, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(code)


def parse_views(text: str | None, option: str = "--input-views"):
    """``64,104`` -> [64, 104] (None stays None)."""
    if text is None:
        return None
    try:
        views = [int(v) for v in text.split(",") if v.strip()]
        if not views or min(views) < 0 or len(set(views)) != len(views):
            raise ValueError
        return views
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a list of distinct view numbers, e.g. 64,104",
                                 param_hint=option) from None


def inference_data_config(data_config: dict, input_views=None, targets=None) -> dict:
    """The data config scene-eval and scene-render use: the training one with its
    ``evaluation`` section applied, then ``--input-views`` and ``--targets``. Views held out
    of training stay out only when they are the targets (``held_out``): otherwise every view
    of a scene may be scored or shown."""
    from ..data import evaluation_config

    config = evaluation_config(data_config)
    if input_views:
        config.update(inputs="given", input_views=list(input_views), num_inputs=len(input_views))
    if targets:
        config["targets"] = targets
        config.pop("target_views", None)
    if config.get("targets") != "held_out":
        config.pop("held_out_views", None)
    return config

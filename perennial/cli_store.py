"""``perennial history | rollback | prune``: looking after an avatar's versions from the command line.

Registered by :func:`add_store_commands` on the main parser's subcommands; each
command is a thin call of :mod:`perennial.avatar.maintenance`. Errors are
``AvatarError`` (a ``ValueError``), which ``perennial.cli.main`` prints as one
line and exit code 2.
"""

from __future__ import annotations

import argparse
import json


def _store(a: argparse.Namespace):
    from perennial.avatar.store import AvatarStore

    return AvatarStore(a.avatar)


def _cmd_history(a: argparse.Namespace) -> int:
    from perennial.avatar.maintenance import format_history, history

    rows = history(_store(a))
    if a.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_history(rows))
    return 0


def _cmd_rollback(a: argparse.Namespace) -> int:
    from perennial.avatar.maintenance import rollback

    store = _store(a)
    before, now = rollback(store, a.to)
    later = [n for n in store.version_numbers() if n > now]
    if before == now:
        print(f"{a.avatar}: version {now} is current already; nothing changed")
    else:
        kept = f"; later versions {later} are kept (roll forward with --to {later[-1]})" if later else ""
        print(f"{a.avatar}: current is now version {now} (was {before}){kept}")
    return 0


def _cmd_prune(a: argparse.Namespace) -> int:
    from perennial.avatar.maintenance import prune

    res = prune(_store(a), a.keep)
    deleted = f"deleted versions {res['deleted']}" if res["deleted"] else "no versions deleted"
    if res["orphans"]:
        deleted += f"; deleted versions {res['orphans']}, written by updates killed before they became current"
    left = f"; removed {len(res['leftovers'])} leftovers of interrupted writes" if res["leftovers"] else ""
    print(f"{a.avatar}: {deleted}; kept {res['kept']}{left}")
    return 0


def add_store_commands(sub) -> None:
    """Register ``history``, ``rollback`` and ``prune`` on ``sub`` (the main parser's subparsers)."""
    h = sub.add_parser(
        "history", help="list an avatar's versions (time, appearance added, strategy, metrics)",
        description="List every version of AVATAR, oldest first: when it was written, what wrote it "
                    "(create/learn), the appearance it added, the learning strategy, all appearances "
                    "it holds and its key metrics (PSNR in dB). '*' marks the current version. "
                    "Reads JSON only; changes nothing.",
    )  # fmt: skip
    h.add_argument("avatar", help="avatar folder")
    h.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    h.set_defaults(func=_cmd_history)

    r = sub.add_parser(
        "rollback", help="make an earlier (or later) version current; deletes nothing",
        description="Make version N of AVATAR current again. Later versions are kept, so a rollback "
                    "can be undone with another rollback. The version's weights are checked against "
                    "their SHA-256 first; the switch is one atomic symlink replacement, under the "
                    "avatar's writer lock (fails at once if a create/learn is running).",
    )  # fmt: skip
    r.add_argument("avatar", help="avatar folder")
    r.add_argument("--to", type=int, required=True, metavar="N", help="version number to make current (see 'perennial history')")
    r.set_defaults(func=_cmd_rollback)

    p = sub.add_parser(
        "prune", help="delete old versions (never the current one) and leftovers of interrupted writes",
        description="Delete all versions of AVATAR but the newest K; the current version is always "
                    "kept, even when it is older. Versions that never became current (an update was "
                    "killed between writing and switching) are deleted first. Also removes temporary "
                    "files that an interrupted "
                    "create/learn left. Runs under the avatar's writer lock; each version is renamed "
                    "away atomically before it is deleted, so an interrupted prune never leaves a "
                    "half version.",
    )  # fmt: skip
    p.add_argument("avatar", help="avatar folder")
    p.add_argument("--keep", type=int, required=True, metavar="K", help="number of newest versions to keep (at least 1)")
    p.set_defaults(func=_cmd_prune)

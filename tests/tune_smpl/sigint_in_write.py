"""`tune-smpl tune ARGS` with a Ctrl-C delivered from inside the Nth write of its Optuna
study: `python sigint_in_write.py N ARGS...`.

SQLAlchemy's `before_commit` event runs inside the transaction, with the study's SQLite
write lock held; the SIGINT sent there reaches the driver's handler before the commit. A
KeyboardInterrupt raised at that point (the old behaviour) left the transaction open and
the interrupted close failed on `database is locked`; a stop request must instead be taken
at the next safe point. Test code only: the product has no hook for it.
"""

from __future__ import annotations

import os
import signal
import sys

from sqlalchemy import event
from sqlalchemy.orm import Session


def main() -> int:
    target, argv = int(sys.argv[1]), sys.argv[2:]
    seen = 0

    def before_commit(session: Session) -> None:
        nonlocal seen
        bind = session.get_bind()
        url = getattr(bind, "url", None) or bind.engine.url  # an Engine or a Connection
        if not str(url).endswith("optuna.db"):  # the study's, not MLflow's store
            return
        seen += 1
        if seen == target:
            print(f"[hook] SIGINT inside study write {seen}", flush=True)
            os.kill(os.getpid(), signal.SIGINT)

    event.listen(Session, "before_commit", before_commit)
    if target <= 0:  # count the writes of a whole sweep
        import atexit

        atexit.register(lambda: print(f"[hook] {seen} study writes", flush=True))
    from tune_smpl.cli import main as cli

    return cli(["tune", *argv])


if __name__ == "__main__":
    sys.exit(main())

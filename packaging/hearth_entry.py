"""The frozen app's entry script: exactly what `hearth` and `python -m app` run."""

from app.main import main

raise SystemExit(main())

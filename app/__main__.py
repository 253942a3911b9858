"""`python -m app` starts Hearth exactly as the `hearth` console script does."""

from app.main import main

raise SystemExit(main())

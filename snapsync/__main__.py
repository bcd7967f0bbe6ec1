from snapsync.cli import main

raise SystemExit(main())

from muse_desktop.cli import main

raise SystemExit(main())

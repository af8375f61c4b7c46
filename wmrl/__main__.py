from wmrl.cli import main

raise SystemExit(main())

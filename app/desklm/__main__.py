from desklm.cli import main

raise SystemExit(main())

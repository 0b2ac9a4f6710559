from raddiag.cli import main

raise SystemExit(main())

from dli_kernel.cli import main

raise SystemExit(main())

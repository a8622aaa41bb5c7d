from dli_kernel.kernel.kernel import main

main()

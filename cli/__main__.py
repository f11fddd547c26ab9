from ftlab.cli.main import main

main()

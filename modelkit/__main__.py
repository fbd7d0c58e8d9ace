from modelkit.cli.app import main

main()

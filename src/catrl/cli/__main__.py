from catrl.cli import main

main()

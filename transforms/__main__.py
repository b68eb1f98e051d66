from transforms.cli import main

main()

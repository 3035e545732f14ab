from gridtask.cli import main

main()

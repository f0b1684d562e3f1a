from cqdeploy.cli import main

main()

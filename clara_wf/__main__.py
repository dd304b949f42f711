from clara_wf.cli import main

main()

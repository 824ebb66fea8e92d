from mysimbdp.cli import main

main()

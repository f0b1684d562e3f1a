import sys

from cqdeploy.cli import cli

cli.main(["egress-gateway", *sys.argv[1:]], prog_name="python -m cqdeploy.gateway")

from netdissect.cli import run

run()

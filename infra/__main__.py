"""Pulumi entry point: `pulumi up` in this folder builds the stack from Pulumi.<stack>.yaml."""

from tuneops_infra.program import main

main()

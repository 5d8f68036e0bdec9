"""tuneops cloud infrastructure (Pulumi, AWS). `program.build(config)` builds everything; each module
builds one concern and returns plain dataclasses of the resources others need."""

"""One thin click module per command. ``COMMANDS`` maps each command name to its module;
setup.cfg declares the same names as console scripts."""

COMMANDS = {
    "scene-convert": "scenetools.cli.convert",
    "scene-info": "scenetools.cli.info",
    "scene-train": "scenetools.cli.train",
    "scene-eval": "scenetools.cli.eval",
    "scene-render": "scenetools.cli.render",
    "scene-video": "scenetools.cli.video",
}

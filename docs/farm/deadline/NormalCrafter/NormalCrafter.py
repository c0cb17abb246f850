"""Deadline plugin: one task = one chunk of one shot, run as
``normalcrafter estimate INPUT -o OUTPUT --frames A:B --context N``.

The job's Frames are the chunk starts and ChunkSize is 1, so each task's
start frame names its chunk; the plugin info's Chunks list ("0:154,154:294,
...", printed by ``normalcrafter farm INPUT -o OUTPUT --plan``) gives its end.
Copy the NormalCrafter folder into <repository>/custom/plugins/.
"""
from Deadline.Plugins import DeadlinePlugin, PluginType


def GetDeadlinePlugin():
    return NormalCrafterPlugin()


def CleanupDeadlinePlugin(deadlinePlugin):
    deadlinePlugin.Cleanup()


class NormalCrafterPlugin(DeadlinePlugin):
    def __init__(self):
        super().__init__()
        self.InitializeProcessCallback += self.InitializeProcess
        self.RenderExecutableCallback += self.RenderExecutable
        self.RenderArgumentCallback += self.RenderArgument

    def Cleanup(self):
        for handler in self.StdoutHandlers:
            del handler.HandleCallback
        del self.InitializeProcessCallback
        del self.RenderExecutableCallback
        del self.RenderArgumentCallback

    def InitializeProcess(self):
        self.PluginType = PluginType.Simple
        self.SingleFramesOnly = True  # one chunk start per task
        self.StdoutHandling = True
        # tqdm writes "37/154 [..." as it goes; errors are one line starting "normalcrafter estimate: error".
        self.AddStdoutHandlerCallback(r"(\d+)/(\d+) \[").HandleCallback += self.HandleProgress
        self.AddStdoutHandlerCallback(r"normalcrafter estimate: error: (.*)").HandleCallback += self.HandleError

    def RenderExecutable(self):
        return self.GetConfigEntryWithDefault("Executable", "normalcrafter")

    def RenderArgument(self):
        start = self.GetStartFrame()
        chunks = dict(
            (int(a), int(b))
            for a, b in (c.split(":") for c in self.GetPluginInfoEntry("Chunks").split(",") if c.strip())
        )
        if start not in chunks:
            self.FailRender("frame %d starts no chunk of the Chunks list" % start)
        args = [
            "estimate", self.GetPluginInfoEntry("Input"),
            "-o", self.GetPluginInfoEntry("Output"),
            "--frames", "%d:%d" % (start, chunks[start]),
            "--context", self.GetPluginInfoEntryWithDefault("Context", "40"),
        ]
        model = self.GetPluginInfoEntryWithDefault("Model", "")
        if model:
            args += ["--model", model]
        extra = self.GetPluginInfoEntryWithDefault("ExtraArgs", "")
        return " ".join('"%s"' % a for a in args) + (" " + extra if extra else "")

    def HandleProgress(self):
        done, total = float(self.GetRegexMatch(1)), float(self.GetRegexMatch(2))
        self.SetProgress(100.0 * done / total if total else 0.0)

    def HandleError(self):
        self.FailRender(self.GetRegexMatch(1))

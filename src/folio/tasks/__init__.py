"""User-facing tasks, each a package of the same files, and the registry that `folio`'s CLI, `serve` and
`export` read (no code outside a task's package names that task).

A task package holds:

    options.py     the options dataclass of `folio NAME train` (extends `folio.training.run.RunOptions`)
    recipe.py      data → model → `Prepared` run, trained by `folio.training.run.run_training`
    inference.py   the Python API class (`from_pretrained`, predict/generate/...)
    metrics.py     the task's figures
    cli.py         `add_cli(parser)`: the task's verbs
    serve.py       `add_routes(app, pick)`: its HTTP routes (where it is served; on `folio.serve.api`)
    page.py        `TAB`, a `folio.serve.api.PageTab`: its tab on the web page at `/` (where it has one)
    export.py      `graphs(directory, fmt)`: its export graphs (where it is exported; on `folio.export_api`)

Each hook's shape is a Protocol in `folio.tasks.registry`.

Adding a task means writing such a package and one `Task(...)` line below.
"""

from __future__ import annotations

from folio.errors import CheckpointError
from folio.tasks.registry import Command, Task, read_task_name

TASKS: dict[str, Task] = {task.name: task for task in [
    # embed first: `task_of` asks the `pretrained` hooks in this order, and lm's takes any Hugging Face
    # directory for a Llama, a BERT sentence encoder's too
    Task("embed", "sentence embeddings (MiniLM)", "folio.tasks.embed.cli:add_cli",
         description='Print one JSON line per text: {"text", "embedding"}, a unit-length vector.',
         inference="folio.tasks.embed.inference:SentenceEmbedder", routes="folio.tasks.embed.serve:add_routes",
         pretrained="folio.models.sentence_encoder:is_sentence_encoder"),
    Task("lm", "language models that generate: Char-RNN, GPT, Llama", "folio.tasks.lm.cli:add_cli",
         inference="folio.tasks.lm:LanguageModel", routes="folio.tasks.lm.serve:add_routes",
         export="folio.tasks.lm.export:graphs", page="folio.tasks.lm.page:TAB",
         pretrained="folio.models.llama_weights:is_pretrained_source"),
    # its checkpoints keep `"task": "lm"` (as before it had a package of its own), so every reader reads old and new
    Task("pretrain", "pretrained encoders: BERT's masked LM and next-sentence prediction, ELMo's biLM",
         "folio.tasks.pretrain.cli:add_cli", inference="folio.tasks.pretrain:PretrainedEncoder"),
    Task("classify", "text classification (IMDb sentiment by default)", "folio.tasks.classify.cli:add_cli",
         inference="folio.tasks.classify:TextClassifier",
         routes="folio.tasks.classify.serve:add_routes", export="folio.tasks.classify.export:graphs",
         page="folio.tasks.classify.page:TAB"),
    Task("translate", "encoder–decoder translation with attention and beam search", "folio.tasks.translate.cli:add_cli",
         inference="folio.tasks.translate:Translator",
         routes="folio.tasks.translate.serve:add_routes", export="folio.tasks.translate.export:graphs",
         page="folio.tasks.translate.page:TAB"),
    Task("caption", "image captioning with visual attention", "folio.tasks.caption.cli:add_cli",
         inference="folio.tasks.caption:ImageCaptioner",
         routes="folio.tasks.caption.serve:add_routes", page="folio.tasks.caption.page:TAB"),
]}

# Sub-commands that are not tasks of their own: they read models of any task.
COMMANDS: dict[str, Command] = {command.name: command for command in [
    Command("serve", "HTTP API and web page for trained models", "folio.serve.cli:add_cli",
            description="Serve trained models over HTTP (each task's routes), /v1/models, /healthz, /docs, "
                        "and a web page at /."),
    Command("export", "a trained model as ONNX or TorchScript", "folio.export:add_cli",
            description="Export a trained model's graphs; every export is checked against PyTorch."),
]}


def task_of(directory) -> Task:
    """The registered task a model directory belongs to (its config.json's "task"), or the task that reads a
    pretrained model named otherwise (a `Task.pretrained` hook: "smollm2", a GGUF file...)."""
    for task in TASKS.values():
        reads = task.hook("pretrained")
        if reads is not None and reads(directory):
            return task
    name = read_task_name(directory)
    if name not in TASKS:
        raise CheckpointError(f"{directory}/config.json: unknown task {name!r} (Folio has {', '.join(TASKS)})")
    return TASKS[name]


__all__ = ["COMMANDS", "TASKS", "Command", "Task", "task_of"]

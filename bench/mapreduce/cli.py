"""Options shared by the scripts that run `loom mapreduce` on synthetic documents
(template_echo.py, values.py), and the command line they build from them."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_loom_args(ap):
    """--context-window, --max-tokens, --threads, --loom-bin and --model, with the defaults
    bench/mapreduce/run.py uses (L = 1024, 150 tokens)."""
    ap.add_argument("--context-window", type=int, default=1024)
    ap.add_argument("--max-tokens", type=int, default=150)
    ap.add_argument("--threads", default="2")
    ap.add_argument("--loom-bin", default=os.environ.get(
        "LOOM_BIN", os.path.join(ROOT, "build", "server", "loom")))
    ap.add_argument("--model", default=os.path.join(ROOT, "models",
                                                    "SmolLM2-135M-Instruct.Q4_1.gguf"))


def mapreduce_argv(args, doc, question, task, *extra):
    """`loom mapreduce` on `doc` with those options, JSON out and no progress bar."""
    return [os.path.abspath(args.loom_bin), "mapreduce", "--doc", doc, "--question", question,
            "--task", task, "--context-window", str(args.context_window), "--max-tokens",
            str(args.max_tokens), "--threads", args.threads, "--json", "--quiet", "--model",
            os.path.abspath(args.model), *extra]

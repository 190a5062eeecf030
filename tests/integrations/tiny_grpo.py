"""A tiny, offline GRPO setting for TRL on CPU: random 1-layer Llama, word-level tokenizer, 3+ arms.

Nothing here touches the Hugging Face Hub: the model is randomly initialised from a config and the
tokenizer is built from a fixed vocabulary, so the tests and `bench/trl_overhead.py` run offline.
"""

from __future__ import annotations

import tempfile
from typing import Any

ARMS = ("add", "mul", "cmp")
# Each arm rewards a completion that contains its own target word: with a random policy about a
# quarter of completions hit it, so groups have reward variance and non-zero GRPO advantages.
TARGET = {"add": "plus", "mul": "times", "cmp": "less"}
WORDS = ["plus", "times", "less", "more", "what", "is", "of", *ARMS, *(str(i) for i in range(10))]


def make_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    vocab = {w: i for i, w in enumerate([*specials, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>", padding_side="left")


def make_model(tokenizer: Any, seed: int = 0) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def make_dataset(per_arm: int = 8) -> Any:
    """`per_arm` prompts of each arm, arm name in the `data_source` column (verl's convention)."""
    from datasets import Dataset

    rows = [{"prompt": f"what is {i % 10} {arm} {(i * 3) % 10}", "data_source": arm}
            for arm in ARMS for i in range(per_arm)]
    return Dataset.from_list(rows)


def target_reward(completions: list[str], data_source: list[str], **_: Any) -> list[float]:
    """1.0 when the completion contains the target word of its arm, else 0.0."""
    return [float(TARGET[arm] in c.split()) for c, arm in zip(completions, data_source, strict=True)]


def make_args(output_dir: str | None = None, **overrides: Any) -> Any:
    from trl import GRPOConfig

    kw: dict[str, Any] = dict(
        output_dir=output_dir or tempfile.mkdtemp(prefix="sb-trl-"), per_device_train_batch_size=16,
        num_generations=4, max_completion_length=8, max_steps=6, learning_rate=1e-3, logging_steps=1,
        report_to="none", save_strategy="no", bf16=False, use_cpu=True, seed=0, dataloader_num_workers=0,
        disable_tqdm=True, beta=0.0,
    )
    kw.update(overrides)
    return GRPOConfig(**kw)

"""Malformed specs, shared by the pydantic tests and the real-apiserver tests.

Each case starts from a valid example, applies one edit and names the field path the error must mention.
`apiserver=False` marks rules that only the pydantic side checks (none yet: every rule is mirrored as CEL or
schema), kept so the table can say so honestly when one appears.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DELETE = object()


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


@dataclass(frozen=True)
class Case:
    id: str
    example: str
    edits: tuple[tuple[str, Any], ...]  # dotted path -> new value (DELETE removes the key)
    field: str  # the path the error must name
    apiserver: bool = True

    def document(self) -> dict[str, Any]:
        doc = copy.deepcopy(example(self.example))
        for path, value in self.edits:
            *parents, leaf = path.split(".")
            node = doc
            for key in parents:
                node = node.setdefault(key, {})
            if value is DELETE:
                node.pop(leaf, None)
            else:
                node[leaf] = value
        return doc


FTJ, QLORA, MV, MDEP = "smollm2-lora.yaml", "llama3-qlora.yaml", "modelversion.yaml", "modeldeployment.yaml"


def c(id: str, example: str, field: str, *edits: tuple[str, Any], apiserver: bool = True) -> Case:
    return Case(id, example, tuple(edits), field, apiserver)


CASES: list[Case] = [
    # wrong types
    c("lora-r-string", FTJ, "spec.lora.r", ("spec.lora.r", "eight")),
    c("epochs-list", FTJ, "spec.training.epochs", ("spec.training.epochs", [1])),
    c("packing-not-bool", FTJ, "spec.training.packing", ("spec.training.packing", "maybe")),
    c("replicas-string", MDEP, "spec.replicas", ("spec.replicas", "two")),
    c("fields-not-map", FTJ, "spec.dataset.fields", ("spec.dataset.fields", ["a", "b"])),
    # missing required fields
    c("no-base-model", FTJ, "spec.baseModel", ("spec.baseModel", DELETE)),
    c("no-dataset-source", FTJ, "spec.dataset.source", ("spec.dataset.source", DELETE)),
    c("no-dataset-format", FTJ, "spec.dataset.format", ("spec.dataset.format", DELETE)),
    c("no-output", FTJ, "spec.output", ("spec.output", DELETE)),
    c("mdep-no-active", MDEP, "spec.activeVersion", ("spec.activeVersion", DELETE)),
    c("mv-no-base-model", MV, "spec.baseModel", ("spec.baseModel", DELETE)),
    # numbers out of range
    c("lora-r-zero", FTJ, "spec.lora.r", ("spec.lora.r", 0)),
    c("lora-dropout-one", FTJ, "spec.lora.dropout", ("spec.lora.dropout", 1.0)),
    c("negative-lr", FTJ, "spec.training.learningRate", ("spec.training.learningRate", -0.001)),
    c("zero-batch", FTJ, "spec.training.batchSize", ("spec.training.batchSize", 0)),
    c("negative-seq-len", FTJ, "spec.training.maxSeqLength", ("spec.training.maxSeqLength", -128)),
    c("split-too-big", FTJ, "spec.dataset.split.validation", ("spec.dataset.split.validation", 1.5)),
    c("negative-replicas", MDEP, "spec.replicas", ("spec.replicas", -1)),
    c("max-rejected-over-one", FTJ, "spec.dataset.validation.maxRejectedFraction",
      ("spec.dataset.validation.maxRejectedFraction", 2)),
    c("mv-version-zero", MV, "spec.version", ("spec.version", 0)),
    # enums
    c("unknown-method", FTJ, "spec.method", ("spec.method", "prefix-tuning")),
    c("unknown-family", FTJ, "spec.baseModel.family", ("spec.baseModel.family", "gpt5")),
    c("unknown-format", FTJ, "spec.dataset.format", ("spec.dataset.format", "xml")),
    c("unknown-engine", MDEP, "spec.engine.kind", ("spec.engine.kind", "vllm")),
    c("zero-stage-4", QLORA, "spec.distribution.deepspeed.zeroStage", ("spec.distribution.deepspeed.zeroStage", 4)),
    # cross-field rules
    c("qlora-without-quantization", QLORA, "spec.quantization", ("spec.quantization", DELETE)),
    c("quantization-without-qlora", FTJ, "spec.quantization", ("spec.quantization", {"bits": 4})),
    c("two-model-sources", FTJ, "spec.baseModel.source",
      ("spec.baseModel.source", {"packaged": "smollm2-135m-instruct", "hf": "HuggingFaceTB/SmolLM2-135M"})),
    c("no-model-source", FTJ, "spec.baseModel.source", ("spec.baseModel.source", {})),
    c("revision-without-hf", FTJ, "spec.baseModel.source.revision", ("spec.baseModel.source.revision", "main")),
    c("multi-gpu-without-strategy", QLORA, "spec.distribution.strategy", ("spec.distribution.strategy", "none"),
      ("spec.distribution.deepspeed", DELETE)),
    c("offload-params-zero2", QLORA, "spec.distribution.deepspeed.offloadParams",
      ("spec.distribution.deepspeed.offloadParams", True)),
    c("active-equals-preview", MDEP, "spec.previewVersion", ("spec.previewVersion", "support-bot-v6")),
    c("min-over-max-replicas", MDEP, "spec.autoscaling.minReplicas", ("spec.autoscaling.minReplicas", 9)),
    c("gate-unknown-metric", FTJ, "spec.evaluation.gate",
      ("spec.evaluation.gate", {"bananas": {"min": 1}})),
    c("gate-without-threshold", FTJ, "spec.evaluation.gate.loss", ("spec.evaluation.gate", {"loss": {}})),
    c("mv-without-weights", MV, "spec", ("spec.adapter", DELETE)),
    c("split-leaves-nothing", FTJ, "spec.dataset.split",
      ("spec.dataset.split", {"validation": 0.6, "test": 0.5})),
    # secrets must be references
    c("inline-secret-env", QLORA, "spec.env[0].value", ("spec.env", [{"name": "HF_TOKEN", "value": "hf_abc123"}])),
    c("inline-storage-keys", QLORA, "spec.storage.accessKey", ("spec.storage.accessKey", "AKIAIOSFODNN7EXAMPLE")),
    c("credentials-secret-not-ref", QLORA, "spec.storage.credentialsSecret",
      ("spec.storage.credentialsSecret", "aws_access_key_id=AKIA...")),
    c("password-in-uri", QLORA, "spec.dataset.source",
      ("spec.dataset.source", "https://user:hunter2@data.example.com/train.jsonl")),
    c("password-in-mlflow-uri", QLORA, "spec.tracking.mlflowUri",
      ("spec.tracking.mlflowUri", "http://admin:secret@mlflow.ml:5000")),
    # bad URIs and names
    c("bad-checkpoint-uri", QLORA, "spec.storage.checkpoints", ("spec.storage.checkpoints", "ftp://host/ckpt")),
    c("relative-output", QLORA, "spec.storage.output", ("spec.storage.output", "models/out")),
    c("bad-hf-id", QLORA, "spec.baseModel.source.hf", ("spec.baseModel.source.hf", "not a model id")),
    c("bad-mlflow-scheme", QLORA, "spec.tracking.mlflowUri", ("spec.tracking.mlflowUri", "mlflow.ml:5000")),
    c("bad-registered-name", FTJ, "spec.output.registeredModel", ("spec.output.registeredModel", "Support_Bot")),
    c("bad-memory-quantity", QLORA, "spec.resources.memory", ("spec.resources.memory", "48 gigs")),
    c("bad-active-version-name", MDEP, "spec.activeVersion", ("spec.activeVersion", "Support Bot V6")),
    c("mv-bad-sha", MV, "spec.lineage.datasetHash", ("spec.lineage.datasetHash", "md5:1234")),
    # unknown fields (typos)
    c("typo-learning-rate", FTJ, "spec.training.learning_rate", ("spec.training.learning_rate", 0.1)),
]
CASES.append(c("unsupported-dataset-scheme", FTJ, "spec.dataset.source", ("spec.dataset.source", "ftp://host/data.jsonl")))

"""The trained models and spherical mappers: weights under the store, a row each in the
catalog. model_log gets a row per state of a model (trained, decided) and the view models
shows the latest; a sphere's row is written once. A row's `checkpoint` says where its
weights were written; records read back name them where the store is now, so a copied or
moved store loads its own."""

from ..io import join, write_bytes
from .connections import now


class Registry:
    """LabelStore's models and spheres."""

    def model_uri(self, model_id: str, name: str) -> str:
        return join(self.uri, "models", model_id, name)

    def save_model(self, record: dict, weights: bytes | None = None) -> dict:
        if weights is not None:
            write_bytes(self.model_uri(record["model_id"], "adapter.pt"), weights)
            record = {**record, "checkpoint": self.model_uri(record["model_id"], "adapter.pt")}
        self._append("model_log", {**record, "logged": now()})
        return record

    def models(self) -> list[dict]:
        """Model records, oldest first; `status`: the latest promotion is 'promoted', earlier
        ones 'retired', others 'rejected' or (undecided) 'training'."""
        return [
            {**r, "checkpoint": r["checkpoint"] and self.model_uri(r["model_id"], "adapter.pt")}
            for r in self._rows("FROM lake.models ORDER BY created")
        ]

    def promoted_model(self) -> dict | None:
        return next((r for r in self.models() if r["status"] == "promoted"), None)

    def model(self, name: str) -> dict | None:
        """The model `name` names: `latest` (the last decided: promoted, retired or rejected),
        `promoted`, or a model id; None when there is none, or it has no weights to load."""
        if name == "promoted":
            record = self.promoted_model()
        elif name == "latest":
            record = next((m for m in reversed(self.models()) if m["status"] != "training"), None)
        else:
            record = next((m for m in self.models() if m["model_id"] == name), None)
        return record if record and record.get("checkpoint") else None

    def save_sphere(self, record: dict, weights: bytes) -> dict:
        """A trained spherical mapper: weights, then its row (the row makes it visible)."""
        uri = self.sphere_uri(record["sphere_id"])
        write_bytes(uri, weights)
        record = {**record, "checkpoint": uri}
        self._append("spheres", record)
        return record

    def sphere_uri(self, sphere_id: str) -> str:
        return join(self.uri, "spheres", sphere_id, "mapper.pt")

    def spheres(self) -> list[dict]:
        """Spherical mapper records, oldest first."""
        return [
            {**r, "checkpoint": self.sphere_uri(r["sphere_id"])}
            for r in self._rows("FROM lake.spheres ORDER BY created")
        ]

"""The preprocessing of a run, chosen from the column types of its data.

Complete numeric columns only: the model's scaler (the fast paths of ``ooc.fastpath``).
Anything else (a string, categorical or boolean column, a numeric column with missing
values, a column forced categorical): a scikit-learn ``ColumnTransformer`` fitted in one
pass by ``ooc.OnePass``, numeric columns imputed then scaled, the others one-hot encoded
with rare categories grouped, unknown ones ignored at prediction.
"""

from __future__ import annotations

from dataclasses import replace

import ooc

from .config import ModelConfig, PreprocessConfig

# Estimators that cannot take scipy.sparse input: the one-hot output is dense for them.
_DENSE_ONLY = ("gaussian-nb",)


def needs_frame(source: ooc.ParquetSource, pre: PreprocessConfig) -> bool:
    """Whether the data needs more than scaling: text, booleans, missing values, or a
    column the settings make categorical."""
    if pre.categorical:
        return True
    return any(
        source.kind(c) in ("category", "bool") or source.may_be_missing(c) for c in source.features
    )


def as_frame(source: ooc.ParquetSource) -> ooc.ParquetSource:
    """The same rows read as a DataFrame that keeps text and missing values."""
    return replace(source, as_frame=True, allow_missing=True)


def column_roles(source: ooc.ParquetSource, pre: PreprocessConfig) -> tuple[list, list]:
    """(numeric, categorical) feature columns."""
    unknown = sorted(set(pre.categorical) - set(source.features))
    if unknown:
        raise ValueError(
            f"--categorical names {unknown}, which are not features of {source.root}; its "
            f"features are {list(source.features)}."
        )
    categorical = [
        c for c in source.features if c in pre.categorical or source.kind(c) in ("category", "bool")
    ]
    return [c for c in source.features if c not in categorical], categorical


def build_preprocessing(source: ooc.ParquetSource, model: ModelConfig, pre: PreprocessConfig):
    """The unfitted ``OnePass(ColumnTransformer)`` for ``source`` (read as a frame)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

    from ooc.catalog import MODELS

    numeric, categorical = column_roles(source, pre)
    scaler = MinMaxScaler() if MODELS[model.name].scaler == "minmax" else StandardScaler()
    branches = []
    if numeric:
        imputer = SimpleImputer(strategy=pre.impute, keep_empty_features=False)
        branches.append(("numeric", make_pipeline(imputer, scaler), numeric))
    if categorical:
        encoder = OneHotEncoder(
            handle_unknown="infrequent_if_exist",
            min_frequency=pre.min_frequency or None,
            max_categories=pre.max_categories,
            sparse_output=model.name not in _DENSE_ONLY,
        )
        branches.append(("categorical", encoder, categorical))
    sparse = 0.0 if model.name in _DENSE_ONLY else 0.3
    return ooc.OnePass(ColumnTransformer(branches, sparse_threshold=sparse))


def categories(preprocessor) -> dict[str, list]:
    """The categories each categorical column was encoded with (for the run's record)."""
    fitted = getattr(preprocessor, "transformer_", None)
    if fitted is None or "categorical" not in fitted.named_transformers_:
        return {}
    encoder = fitted.named_transformers_["categorical"]
    return {
        str(name): [str(v) for v in values]
        for name, values in zip(encoder.feature_names_in_, encoder.categories_, strict=True)
    }

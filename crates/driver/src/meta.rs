//! The self-description of a `.dcz` file: the metadata block (`deepcomp_format::ModelMeta`) written
//! from a recipe, and a recipe rebuilt from it, so that `deepcomp eval`, `run` and `decompress` work
//! from the file alone.

use std::path::Path;

use crate::container::{DczFile, ModelMeta};
use crate::error::{DriverError, Result};
use crate::recipe::{ArchSection, Recipe};

/// The metadata block of a file made from `recipe`: architecture id and options, dataset, padding,
/// and the input normalization (the recipe's, else the dataset's customary one).
pub fn for_recipe(recipe: &Recipe, producer: &str) -> ModelMeta {
    let id = recipe.dataset.parse::<deepcomp_datasets::DatasetId>().ok();
    let mean = recipe.data.mean.clone().or_else(|| id.map(|d| d.mean()));
    let std = recipe.data.std.clone().or_else(|| id.map(|d| d.std()));
    ModelMeta {
        arch: Some(recipe.model.clone()),
        // Unset options are left out (a reader takes the architecture's defaults for them), so the
        // block costs a few dozen bytes, not a hundred.
        arch_config: serde_json::to_value(&recipe.arch).ok().map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                o.retain(|_, x| !x.is_null());
            }
            v
        }),
        dataset: Some(recipe.dataset.clone()),
        pad_to: recipe.data.pad_to,
        mean,
        std,
        producer: Some(producer.to_string()),
    }
}

/// The metadata of `file`, if it has a block deepcomp can read.
pub fn of_file(file: &DczFile, path: &Path) -> Result<Option<ModelMeta>> {
    match &file.metadata {
        None => Ok(None),
        Some(text) => ModelMeta::from_json(text).map(Some).map_err(|e| {
            DriverError::msg(format!(
                "{}: the metadata block is not deepcomp's: {e}",
                path.display()
            ))
        }),
    }
}

/// A recipe for evaluating the model a metadata block describes: its architecture, dataset (or
/// `dataset`, which wins), padding and normalization. Training sections are placeholders.
pub fn recipe_from_meta(meta: &ModelMeta, dataset: Option<&str>, origin: &str) -> Result<Recipe> {
    let arch = meta.arch.as_deref().ok_or_else(|| {
        DriverError::msg(format!(
            "{origin}: the file's metadata names no architecture; pass --recipe"
        ))
    })?;
    let dataset = dataset.or(meta.dataset.as_deref()).ok_or_else(|| {
        DriverError::msg(format!(
            "{origin}: the file's metadata names no dataset; pass --dataset or --recipe"
        ))
    })?;
    let text = format!(
        "name = \"from-file\"\nmodel = {}\ndataset = {}\n[train]\nepochs = 1\nlr = 0.01\n\
         [prune]\nmethod = \"percentile\"\nrounds = [{{ target = 0.5, epochs = 0 }}]\n[quant]\n",
        toml_str(arch),
        toml_str(dataset)
    );
    let mut r = crate::recipe::parse(&text, origin)?.recipe;
    if let Some(cfg) = &meta.arch_config {
        r.arch = serde_json::from_value::<ArchSection>(cfg.clone()).map_err(|e| {
            DriverError::msg(format!("{origin}: metadata field `arch_config`: {e}"))
        })?;
    }
    r.data.pad_to = meta.pad_to;
    r.data.mean = meta.mean.clone();
    r.data.std = meta.std.clone();
    r.validate(origin)?;
    Ok(r)
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The recipe `eval` / `run` use for `path`: `--recipe` when given; else, for a `.dcz` file with
/// metadata, the one it describes (`dataset` overriding its dataset); else the built-in `fallback`.
pub fn recipe_for(
    path: &Path,
    recipe: Option<&str>,
    dataset: Option<&str>,
    fallback: &str,
) -> Result<Recipe> {
    if let Some(name) = recipe {
        let mut r = crate::recipe::load(name)?.recipe;
        if let Some(d) = dataset {
            r.dataset = d.to_string();
        }
        return Ok(r);
    }
    if path.extension().is_some_and(|e| e == "dcz") {
        let file = DczFile::read(path)?;
        if let Some(meta) = of_file(&file, path)? {
            return recipe_from_meta(&meta, dataset, &path.display().to_string());
        }
    }
    let mut r = crate::recipe::load(fallback)?.recipe;
    if let Some(d) = dataset {
        r.dataset = d.to_string();
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recipe_survives_the_metadata_round_trip() {
        let r = crate::recipe::load("resnet20-cifar10-jpeg").unwrap().recipe;
        let meta = for_recipe(&r, "test");
        let json = meta.to_json();
        assert!(!json.contains("null"), "unset options are left out: {json}");
        let back = ModelMeta::from_json(&json).unwrap();
        assert_eq!(back, meta);
        let rebuilt = recipe_from_meta(&back, None, "test").unwrap();
        assert_eq!(rebuilt.model, "resnet20");
        assert_eq!(rebuilt.dataset, "cifar10");
        assert_eq!(rebuilt.arch, r.arch);
        assert_eq!(rebuilt.data.mean, Some(vec![0.485, 0.456, 0.406]));
        assert_eq!(rebuilt.data.std, Some(vec![0.229, 0.224, 0.225]));
        // The dataset's customary normalization when the recipe sets none.
        let l = crate::recipe::load("lenet300-fashion").unwrap().recipe;
        let m = for_recipe(&l, "test");
        assert_eq!(m.mean, Some(vec![0.2860]));
        let rebuilt = recipe_from_meta(&m, Some("mnist"), "test").unwrap();
        assert_eq!(rebuilt.dataset, "mnist");
    }

    #[test]
    fn missing_architecture_is_a_clear_error() {
        let e = recipe_from_meta(&ModelMeta::default(), None, "m.dcz")
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.dcz") && e.contains("--recipe"), "{e}");
    }
}

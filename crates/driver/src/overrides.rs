//! `--set KEY=VALUE`: changing any recipe field from the command line.
//!
//! An override acts on the recipe's TOML before it is deserialized, so it reaches every field, with
//! the recipe's own checks afterwards:
//!
//! * the key is a dotted path (`train.epochs`, `prune.rounds.0.target`); a numeric segment indexes an
//!   array (one past the end appends), a quoted segment may hold dots (`quant.bits."fc1.weight"`), and
//!   under the map fields ([`MAP_FIELDS`]) the rest of the path is one map key, so
//!   `quant.bits.fc1.weight` names the layer `fc1.weight`;
//! * the value is read as a TOML value (`3`, `0.8`, `true`, `"text"`, `[0.5, 0.9]`,
//!   `{ target = 0.9, epochs = 1 }`); anything that is not one (`std`, `/data/fashion`) is a string;
//! * a key that is no recipe field, or a value of the wrong type, is an error naming the key (and the
//!   value), and so is a value out of range ([`Recipe::validate`](crate::recipe::Recipe::validate)).
//!
//! Nothing here touches a file: a run fails on a bad override before it starts.

use crate::recipe::{LoadedRecipe, Recipe, RecipeError};

/// Map fields of a recipe (field path → the map): a path below one of them names one map key, dots
/// included (layer names such as `fc1.weight` have dots).
pub const MAP_FIELDS: &[&[&str]] = &[&["quant", "bits"], &["prune", "layer_scale"]];

/// One `KEY=VALUE` override, split.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// The key as given.
    pub key: String,
    /// The key's segments.
    pub path: Vec<String>,
    /// The value text as given (trimmed).
    pub value: String,
}

impl Assignment {
    /// `KEY=VALUE` as given.
    pub fn text(&self) -> String {
        format!("{}={}", self.key, self.value)
    }

    /// The key with its segments joined by dots (quotes removed): the same for every spelling of
    /// one field.
    pub fn canonical_key(&self) -> String {
        self.path.join(".")
    }
}

fn bad(assignment: &str, reason: impl Into<String>) -> RecipeError {
    RecipeError::Override {
        assignment: assignment.to_string(),
        reason: reason.into(),
    }
}

/// Splits `KEY=VALUE` at the first `=` outside a quoted key segment.
pub fn split_assignment(text: &str) -> Result<(String, String), RecipeError> {
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '=') => {
                let key = text[..i].trim();
                if key.is_empty() {
                    return Err(bad(text, "the key before `=` is empty"));
                }
                return Ok((key.to_string(), text[i + 1..].trim().to_string()));
            }
            _ => {}
        }
    }
    Err(bad(text, "expected KEY=VALUE (no `=` found)"))
}

/// The segments of a dotted key: bare segments of letters, digits, `_` and `-`, or quoted ones
/// (`"fc1.weight"`, `'fc1.weight'`).
pub fn parse_key(key: &str) -> Result<Vec<String>, String> {
    let mut segs = Vec::new();
    let mut chars = key.trim().chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut seg = String::new();
        match chars.peek().copied() {
            Some(q @ ('"' | '\'')) => {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    if c == q {
                        closed = true;
                        break;
                    }
                    if c == '\\' && q == '"' {
                        match chars.next() {
                            Some(e) => seg.push(e),
                            None => break,
                        }
                    } else {
                        seg.push(c);
                    }
                }
                if !closed {
                    return Err(format!("key `{key}`: unclosed quote"));
                }
            }
            _ => {
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        seg.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if seg.is_empty() {
                    return Err(format!(
                        "key `{key}`: empty or malformed segment (use letters, digits, _ and -, \
                         or quote it)"
                    ));
                }
            }
        }
        segs.push(seg);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => return Ok(segs),
            Some('.') => {}
            Some(c) => return Err(format!("key `{key}`: unexpected `{c}`")),
        }
    }
}

/// Parses one override (`KEY=VALUE`).
pub fn parse_assignment(text: &str) -> Result<Assignment, RecipeError> {
    let (key, value) = split_assignment(text)?;
    let path = parse_key(&key).map_err(|e| bad(text, e))?;
    Ok(Assignment { key, path, value })
}

/// A value as TOML (number, bool, string, array, inline table, date); anything else is the string
/// itself (`std` → `"std"`).
pub fn parse_value(text: &str) -> toml::Value {
    let doc = format!("v = {text}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) if t.len() == 1 => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(text.to_string())),
        _ => toml::Value::String(text.to_string()),
    }
}

/// The path with map-field tails joined into one key (`quant.bits.fc1.weight` → `quant`, `bits`,
/// `fc1.weight`).
fn effective_path(path: &[String]) -> Vec<String> {
    for map in MAP_FIELDS {
        if path.len() > map.len() + 1 && path.iter().zip(map.iter()).all(|(a, b)| a == b) {
            let mut p: Vec<String> = path[..map.len()].to_vec();
            p.push(path[map.len()..].join("."));
            return p;
        }
    }
    path.to_vec()
}

/// Sets `path` in `root` to `value`, creating tables on the way.
fn set_path(root: &mut toml::Value, path: &[String], value: toml::Value) -> Result<(), String> {
    let mut cur = root;
    for (i, seg) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        let here = path[..i].join(".");
        cur = match cur {
            toml::Value::Table(t) => {
                if last {
                    t.insert(seg.clone(), value);
                    return Ok(());
                }
                t.entry(seg.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            }
            toml::Value::Array(a) => {
                let idx: usize = seg.parse().map_err(|_| {
                    format!("`{here}` is an array: `{seg}` is not an index (0, 1, …)")
                })?;
                if idx > a.len() {
                    return Err(format!(
                        "index {idx} is out of range: `{here}` has {} element(s) (index {} \
                         appends one)",
                        a.len(),
                        a.len()
                    ));
                }
                if idx == a.len() {
                    a.push(if last {
                        value.clone()
                    } else {
                        toml::Value::Table(toml::Table::new())
                    });
                    if last {
                        return Ok(());
                    }
                } else if last {
                    a[idx] = value;
                    return Ok(());
                }
                &mut a[idx]
            }
            other => {
                let t = other.type_str();
                let a = if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                return Err(format!(
                    "`{here}` is {a} {t}, not a table: it has no field `{seg}`"
                ));
            }
        };
    }
    Err("the key is empty".into())
}

/// Applies one override to the recipe's TOML.
fn apply_one(root: &mut toml::Value, a: &Assignment) -> Result<(), RecipeError> {
    let path = effective_path(&a.path);
    set_path(root, &path, parse_value(&a.value)).map_err(|e| bad(&a.text(), e))
}

/// Why deserializing the recipe with `a` applied fails, worded for the user.
fn explain(a: &Assignment, message: &str) -> RecipeError {
    let message = message.trim().replace('\n', " ");
    if message.contains("unknown field") {
        bad(
            &a.text(),
            format!("`{}` is not a recipe field: {message}", a.key),
        )
    } else {
        bad(
            &a.text(),
            format!(
                "value `{}` does not fit field `{}`: {message}",
                a.value, a.key
            ),
        )
    }
}

/// Parses recipe `text` (from `origin`) with the overrides applied, in order, and validates the
/// result. Without overrides this is [`crate::recipe::parse`]; with them the recipe's text becomes the
/// effective recipe written back as TOML (so the `.dcz` header's recipe hash is that of the recipe
/// that ran) and the origin says which overrides were applied.
pub fn parse_with(
    text: &str,
    origin: &str,
    sets: &[Assignment],
) -> Result<LoadedRecipe, RecipeError> {
    if sets.is_empty() {
        return crate::recipe::parse(text, origin);
    }
    let base: toml::Value = text
        .parse::<toml::Table>()
        .map(toml::Value::Table)
        .map_err(|e| RecipeError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
    let mut value = base.clone();
    for a in sets {
        apply_one(&mut value, a)?;
    }
    let recipe: Recipe = match value.clone().try_into() {
        Ok(r) => r,
        Err(e) => {
            // Blame the first override that fails on its own; if none does, the base recipe or the
            // combination is at fault.
            if base.clone().try_into::<Recipe>().is_ok() {
                for a in sets {
                    let mut one = base.clone();
                    apply_one(&mut one, a)?;
                    if let Err(e1) = one.try_into::<Recipe>() {
                        return Err(explain(a, &e1.to_string()));
                    }
                }
            }
            let all: Vec<String> = sets.iter().map(Assignment::text).collect();
            return Err(RecipeError::Parse {
                origin: format!("{origin} with --set {}", all.join(" --set ")),
                message: e.to_string(),
            });
        }
    };
    let all: Vec<String> = sets.iter().map(Assignment::text).collect();
    let origin = format!("{origin} with --set {}", all.join(" --set "));
    recipe.validate(&origin)?;
    let text = toml::to_string(&value).map_err(|e| RecipeError::Parse {
        origin: origin.clone(),
        message: e.to_string(),
    })?;
    Ok(LoadedRecipe {
        recipe,
        origin,
        text,
    })
}

/// Loads a recipe by built-in name or path and applies `sets` (`KEY=VALUE` texts).
pub fn load_with(name_or_path: &str, sets: &[String]) -> Result<LoadedRecipe, RecipeError> {
    let sets = sets
        .iter()
        .map(|s| parse_assignment(s))
        .collect::<Result<Vec<_>, _>>()?;
    let (text, origin) = crate::recipe::load_text(name_or_path)?;
    parse_with(&text, &origin, &sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ci_text() -> &'static str {
        crate::recipe::BUILTIN
            .iter()
            .find(|(n, _)| *n == "ci")
            .unwrap()
            .1
    }

    fn with(sets: &[&str]) -> Result<LoadedRecipe, RecipeError> {
        let sets: Vec<Assignment> = sets.iter().map(|s| parse_assignment(s).unwrap()).collect();
        parse_with(ci_text(), "built-in `ci`", &sets)
    }

    #[test]
    fn keys_split_into_segments() {
        assert_eq!(parse_key("train.epochs").unwrap(), ["train", "epochs"]);
        assert_eq!(
            parse_key("quant.bits.\"fc1.weight\"").unwrap(),
            ["quant", "bits", "fc1.weight"]
        );
        assert_eq!(
            parse_key("prune.rounds.0.target").unwrap(),
            ["prune", "rounds", "0", "target"]
        );
        assert!(parse_key("train..epochs").is_err());
        assert!(parse_key("quant.bits.\"fc1").is_err());
        assert_eq!(
            split_assignment("quant.bits.\"a=b\"=3").unwrap(),
            ("quant.bits.\"a=b\"".to_string(), "3".to_string())
        );
        assert!(split_assignment("train.epochs").is_err());
    }

    #[test]
    fn values_are_toml_with_bare_words_as_strings() {
        assert_eq!(parse_value("3"), toml::Value::Integer(3));
        assert_eq!(parse_value("0.8"), toml::Value::Float(0.8));
        assert_eq!(parse_value("true"), toml::Value::Boolean(true));
        assert_eq!(parse_value("std"), toml::Value::String("std".into()));
        assert_eq!(parse_value("\"a b\""), toml::Value::String("a b".into()));
        assert_eq!(
            parse_value("/data/x"),
            toml::Value::String("/data/x".into())
        );
        assert!(matches!(parse_value("[0.5, 0.9]"), toml::Value::Array(a) if a.len() == 2));
        // Not one value: the text itself.
        assert_eq!(
            parse_value("1\nw = 2"),
            toml::Value::String("1\nw = 2".into())
        );
    }

    #[test]
    fn overrides_reach_nested_array_and_map_fields() {
        let r = with(&[
            "train.epochs=3",
            "seed=43",
            "prune.rounds.0.target=0.5",
            "quant.bits.fc1.weight=3",
            "quant.bits.\"fc2.weight\"=6",
            "prune.layer_scale.fc3.weight=0.5",
            "prune.method=percentile",
            "data.mean=[0.5]",
            "data.std=[0.25]",
        ])
        .unwrap();
        let r2 = crate::recipe::parse(&r.text, "back").unwrap().recipe;
        for r in [&r.recipe, &r2] {
            assert_eq!(r.train.epochs, 3);
            assert_eq!(r.seed, 43);
            assert_eq!(r.prune.rounds[0].target, Some(0.5));
            assert_eq!(r.prune.rounds[1].target, Some(0.85));
            assert_eq!(r.quant.bits["fc1.weight"], 3);
            assert_eq!(r.quant.bits["fc2.weight"], 6);
            assert_eq!(r.prune.layer_scale["fc3.weight"], 0.5);
            assert_eq!(r.data.mean, Some(vec![0.5]));
        }
        // A whole round appended, and a whole array replaced.
        let r = with(&["prune.rounds.3={ target = 0.95, epochs = 1 }"]).unwrap();
        assert_eq!(r.recipe.prune.rounds.len(), 4);
        let r = with(&["prune.rounds=[{ target = 0.9, epochs = 2 }]"]).unwrap();
        assert_eq!(r.recipe.prune.rounds.len(), 1);
        assert_eq!(r.recipe.prune.rounds[0].epochs, 2);
        // An integer where a float goes.
        assert_eq!(with(&["quant.lr=1"]).unwrap().recipe.quant.lr, 1.0);
    }

    #[test]
    fn no_override_keeps_the_text_and_hash() {
        let plain = crate::recipe::parse(ci_text(), "ci").unwrap();
        let same = with(&[]).unwrap();
        assert_eq!(plain.hash(), same.hash());
        let changed = with(&["seed=8"]).unwrap();
        assert_ne!(plain.hash(), changed.hash());
        assert!(
            changed.origin.contains("--set seed=8"),
            "{}",
            changed.origin
        );
    }

    #[test]
    fn a_misspelled_key_is_named() {
        for (set, key) in [
            ("trian.epochs=3", "trian"),
            ("train.epoch=3", "epoch"),
            ("prune.rounds.0.targt=0.5", "targt"),
            ("modle=lenet5", "modle"),
        ] {
            let e = with(&[set]).unwrap_err().to_string();
            assert!(e.contains(set) && e.contains(key), "{set}: {e}");
            assert!(e.contains("not a recipe field"), "{set}: {e}");
        }
        let e = with(&["prune.rounds.7.target=0.5"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("prune.rounds.7.target") && e.contains("out of range"),
            "{e}"
        );
        let e = with(&["seed.x=1"]).unwrap_err().to_string();
        assert!(e.contains("seed.x") && e.contains("not a table"), "{e}");
    }

    #[test]
    fn a_bad_value_names_key_and_value() {
        for (set, key, value) in [
            ("train.epochs=abc", "train.epochs", "abc"),
            ("train.epochs=-1", "train.epochs", "-1"),
            ("quant.bits.fc1.weight=x", "quant.bits.fc1.weight", "x"),
            ("train.nesterov=3", "train.nesterov", "3"),
        ] {
            let e = with(&[set]).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(value), "{set}: {e}");
            assert!(e.contains("does not fit"), "{set}: {e}");
        }
        // Right type, out of range: the recipe's own check, naming the field and the override.
        let e = with(&["quant.fc_bits=17"]).unwrap_err().to_string();
        assert!(
            e.contains("quant.fc_bits") && e.contains("17") && e.contains("--set"),
            "{e}"
        );
    }
}

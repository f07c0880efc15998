//! `cri-imaged inspect REF`: ImageStatus with `verbose`, printed as JSON (the
//! image object under "image", and each verbose `info` key, parsed, beside it,
//! as crictl's `inspecti` does) or as a key-value table. An image that is not
//! there is an error: "image REF not found", exit code 1.

use std::process::ExitCode;

use crate::api::proto::runtime::v1 as cri;
use crate::cli::daemon_connection::ImageServiceConnection;
use crate::cli::error::CliError;
use crate::cli::human_format::human_size;
use crate::cli::images::image_json;
use crate::cli::table::render_key_values;
use crate::cli::{ConnectionArgs, OutputFormat, json_text, write_stdout};

/// The key of the image object in the JSON output; a verbose `info` key of
/// the same name would be shadowed, so it is never taken from `info`.
const IMAGE_KEY: &str = "image";

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// The image: a reference, an id, or an id prefix.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,
}

pub async fn run(args: InspectArgs) -> Result<ExitCode, CliError> {
    let socket = args.connection.socket()?;
    let mut connection = ImageServiceConnection::open(&socket).await?;
    let status = connection.image_status(&args.reference, true).await?;
    let Some(image) = &status.image else {
        return Err(CliError::ImageNotFound {
            reference: args.reference,
        });
    };
    let text = match args.output {
        OutputFormat::Json => json_text(&inspect_json(image, &status)),
        OutputFormat::Table => inspect_table(image, &status),
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn inspect_json(image: &cri::Image, status: &cri::ImageStatusResponse) -> serde_json::Value {
    let mut document = serde_json::Map::new();
    document.insert(IMAGE_KEY.to_owned(), image_json(image));
    for (key, value) in &status.info {
        if key == IMAGE_KEY {
            continue;
        }
        // Values are JSON by the CRI contract; one that is not is kept as text.
        let parsed = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.clone()));
        document.insert(key.clone(), parsed);
    }
    serde_json::Value::Object(document)
}

fn inspect_table(image: &cri::Image, status: &cri::ImageStatusResponse) -> String {
    let mut pairs: Vec<(&str, String)> = vec![("ID", image.id.clone())];
    push_list(&mut pairs, "Repo tags", &image.repo_tags);
    push_list(&mut pairs, "Repo digests", &image.repo_digests);
    pairs.push((
        "Size",
        format!("{} ({} bytes)", human_size(image.size), image.size),
    ));
    let user = match (&image.uid, image.username.as_str()) {
        (Some(uid), _) => uid.value.to_string(),
        (None, "") => "<none>".to_owned(),
        (None, username) => username.to_owned(),
    };
    pairs.push(("User", user));
    pairs.push(("Pinned", image.pinned.to_string()));
    let info: Option<serde_json::Value> = status
        .info
        .get("info")
        .and_then(|text| serde_json::from_str(text).ok());
    if let Some(info) = info {
        for (label, key) in [
            ("State", "state"),
            ("Manifest", "manifest"),
            ("Chain id", "chainId"),
        ] {
            if let Some(value) = info.get(key).and_then(serde_json::Value::as_str) {
                pairs.push((label, value.to_owned()));
            }
        }
    }
    render_key_values(&pairs)
}

/// `label: first` and one continuation line per further item; `<none>` for
/// an empty list.
fn push_list<'a>(pairs: &mut Vec<(&'a str, String)>, label: &'a str, items: &[String]) {
    if items.is_empty() {
        pairs.push((label, "<none>".to_owned()));
    }
    for (index, item) in items.iter().enumerate() {
        pairs.push((if index == 0 { label } else { "" }, item.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> (cri::Image, cri::ImageStatusResponse) {
        let image = cri::Image {
            id: "sha256:abc".to_owned(),
            repo_tags: vec!["a.example/x:1".to_owned(), "a.example/x:2".to_owned()],
            size: 7_200_000,
            uid: Some(cri::Int64Value { value: 0 }),
            ..cri::Image::default()
        };
        let response = cri::ImageStatusResponse {
            image: Some(image.clone()),
            info: [
                (
                    "info".to_owned(),
                    r#"{"state":"ready","manifest":"sha256:def","chainId":null}"#.to_owned(),
                ),
                ("note".to_owned(), "not json".to_owned()),
                ("image".to_owned(), "{}".to_owned()),
            ]
            .into_iter()
            .collect(),
        };
        (image, response)
    }

    #[test]
    fn json_holds_the_image_and_each_parsed_info_key() {
        let (image, response) = status();
        let document = inspect_json(&image, &response);
        assert_eq!(document["image"]["id"], "sha256:abc");
        assert_eq!(document["image"]["uid"], 0);
        assert_eq!(document["info"]["state"], "ready");
        assert_eq!(document["note"], "not json");
        assert_eq!(document.as_object().unwrap().len(), 3);
    }

    #[test]
    fn the_table_lists_names_size_user_and_state() {
        let (image, response) = status();
        let expected = "\
ID:            sha256:abc
Repo tags:     a.example/x:1
               a.example/x:2
Repo digests:  <none>
Size:          7.2MB (7200000 bytes)
User:          0
Pinned:        false
State:         ready
Manifest:      sha256:def
";
        assert_eq!(inspect_table(&image, &response), expected);
    }
}

//! `cri-imaged images`: ListImages as a crictl-like table (IMAGE, TAG,
//! [DIGEST], IMAGE ID, SIZE; one row per tag), as bare ids (`-q`), or as JSON.

use std::process::ExitCode;

use crate::api::proto::runtime::v1 as cri;
use crate::cli::daemon_connection::ImageServiceConnection;
use crate::cli::error::CliError;
use crate::cli::human_format::{human_size, truncated_id};
use crate::cli::table::render_table;
use crate::cli::{ConnectionArgs, OutputFormat, json_text, write_stdout};

/// What a table shows for a missing repository, tag or digest, as crictl does.
const NONE: &str = "<none>";

#[derive(clap::Args, Debug)]
pub struct ImagesArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Print only the full image ids, one per line.
    #[arg(short = 'q', long, conflicts_with_all = ["digests", "output"])]
    pub quiet: bool,
    /// Add a DIGEST column to the table.
    #[arg(long)]
    pub digests: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

pub async fn run(args: ImagesArgs) -> Result<ExitCode, CliError> {
    let socket = args.connection.socket()?;
    let mut connection = ImageServiceConnection::open(&socket).await?;
    let mut images = connection.list_images().await?;
    images.sort_by(|left, right| {
        (left.repo_tags.first(), &left.id).cmp(&(right.repo_tags.first(), &right.id))
    });
    let text = if args.quiet {
        images
            .iter()
            .map(|image| format!("{}\n", image.id))
            .collect()
    } else {
        match args.output {
            OutputFormat::Table => images_table(&images, args.digests),
            OutputFormat::Json => json_text(&serde_json::Value::Array(
                images.iter().map(image_json).collect(),
            )),
        }
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The JSON object of one image; `inspect` prints the same one.
pub fn image_json(image: &cri::Image) -> serde_json::Value {
    serde_json::json!({
        "id": image.id,
        "repoTags": image.repo_tags,
        "repoDigests": image.repo_digests,
        "size": image.size,
        "uid": image.uid.as_ref().map(|uid| uid.value),
        "username": image.username,
        "pinned": image.pinned,
    })
}

fn images_table(images: &[cri::Image], show_digests: bool) -> String {
    let mut rows = Vec::new();
    for image in images {
        let (digest_repository, digest) = split_repo_digest(&image.repo_digests);
        let id = truncated_id(&image.id).to_owned();
        let size = human_size(image.size);
        let repository_tags: Vec<(String, String)> = if image.repo_tags.is_empty() {
            vec![(digest_repository.to_owned(), NONE.to_owned())]
        } else {
            image
                .repo_tags
                .iter()
                .map(|tag| split_repo_tag(tag))
                .collect()
        };
        for (repository, tag) in repository_tags {
            let mut row = vec![repository, tag];
            if show_digests {
                row.push(digest.to_owned());
            }
            row.push(id.clone());
            row.push(size.clone());
            rows.push(row);
        }
    }
    let header: &[&str] = if show_digests {
        &["IMAGE", "TAG", "DIGEST", "IMAGE ID", "SIZE"]
    } else {
        &["IMAGE", "TAG", "IMAGE ID", "SIZE"]
    };
    render_table(header, &rows)
}

/// `host:5000/team/app:v1` -> (`host:5000/team/app`, `v1`): the tag follows
/// the last colon, which is never the port's in a tagged name.
fn split_repo_tag(repo_tag: &str) -> (String, String) {
    match repo_tag.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository.to_owned(), tag.to_owned()),
        _ => (repo_tag.to_owned(), NONE.to_owned()),
    }
}

/// The repository and the truncated digest of the first digested name.
fn split_repo_digest(repo_digests: &[String]) -> (&str, &str) {
    match repo_digests.first().and_then(|name| name.split_once('@')) {
        Some((repository, digest)) => (repository, truncated_id(digest)),
        None => (NONE, NONE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "sha256:3f57d9401f8d42f986df300f0c69192fc41da28ccc8d797829467780db3dd741";
    const MANIFEST: &str =
        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn image(repo_tags: &[&str], repo_digests: &[&str], size: u64) -> cri::Image {
        cri::Image {
            id: ID.to_owned(),
            repo_tags: repo_tags.iter().map(|tag| (*tag).to_owned()).collect(),
            repo_digests: repo_digests.iter().map(|name| (*name).to_owned()).collect(),
            size,
            ..cri::Image::default()
        }
    }

    #[test]
    fn one_row_per_tag_with_truncated_ids_and_human_sizes() {
        let images = [
            image(
                &[
                    "127.0.0.1:5000/team/app:v1",
                    "127.0.0.1:5000/team/app:latest",
                ],
                &[&format!("127.0.0.1:5000/team/app@{MANIFEST}")],
                7_200_000,
            ),
            image(
                &[],
                &[&format!("docker.io/library/busybox@{MANIFEST}")],
                1_460_000,
            ),
        ];
        let expected = "\
IMAGE                       TAG                 IMAGE ID            SIZE
127.0.0.1:5000/team/app     v1                  3f57d9401f8d4       7.2MB
127.0.0.1:5000/team/app     latest              3f57d9401f8d4       7.2MB
docker.io/library/busybox   <none>              3f57d9401f8d4       1.46MB
";
        assert_eq!(images_table(&images, false), expected);
        let expected_with_digests = "\
IMAGE                       TAG                 DIGEST              IMAGE ID            SIZE
127.0.0.1:5000/team/app     v1                  0123456789abc       3f57d9401f8d4       7.2MB
127.0.0.1:5000/team/app     latest              0123456789abc       3f57d9401f8d4       7.2MB
docker.io/library/busybox   <none>              0123456789abc       3f57d9401f8d4       1.46MB
";
        assert_eq!(images_table(&images, true), expected_with_digests);
    }

    #[test]
    fn an_image_without_names_shows_none() {
        let text = images_table(&[image(&[], &[], 10)], true);
        assert_eq!(
            text.lines().nth(1).unwrap(),
            "<none>              <none>              <none>              3f57d9401f8d4       10B"
        );
    }

    #[test]
    fn json_objects_carry_the_listed_fields() {
        let mut with_uid = image(&["a.example/x:1"], &[], 5);
        with_uid.uid = Some(cri::Int64Value { value: 1000 });
        assert_eq!(
            image_json(&with_uid),
            serde_json::json!({
                "id": ID, "repoTags": ["a.example/x:1"], "repoDigests": [], "size": 5,
                "uid": 1000, "username": "", "pinned": false,
            })
        );
        let mut named = image(&[], &[], 5);
        named.username = "nobody".to_owned();
        assert_eq!(image_json(&named)["uid"], serde_json::Value::Null);
        assert_eq!(image_json(&named)["username"], "nobody");
    }
}

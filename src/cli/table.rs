//! Plain-text layouts: column tables laid out like crictl's (Go's tabwriter
//! with a minimum width of 20 and a padding of 3) and aligned key-value lists.

/// A column is at least this wide, padding included (crictl's tabwriter).
const COLUMN_WIDTH_MIN: usize = 20;
/// Spaces after the widest cell of a column.
const COLUMN_PADDING: usize = 3;

/// `header` and `rows` as aligned columns, one line each. Every column but
/// the last is padded to `max(widest cell + 3, 20)` characters; the last is
/// not padded, so no line ends in spaces.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let column_count = header.len();
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        debug_assert_eq!(row.len(), column_count, "every row has one cell per column");
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<&str> = header.to_vec();
    let lines = std::iter::once(header).chain(
        rows.iter()
            .map(|row| row.iter().map(String::as_str).collect()),
    );
    for cells in lines {
        for (index, cell) in cells.iter().enumerate() {
            text.push_str(cell);
            if index + 1 < cells.len() {
                let column_width = (widths[index] + COLUMN_PADDING).max(COLUMN_WIDTH_MIN);
                let padding = column_width - cell.chars().count();
                text.extend(std::iter::repeat_n(' ', padding));
            }
        }
        text.push('\n');
    }
    text
}

/// `Key:  value` lines with the values aligned. A key given as "" continues
/// the previous key's value on a new line (for lists such as repo tags).
pub fn render_key_values(pairs: &[(&str, String)]) -> String {
    let key_width = pairs
        .iter()
        .map(|(key, _)| key.chars().count() + 1)
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for (key, value) in pairs {
        let label = if key.is_empty() {
            String::new()
        } else {
            format!("{key}:")
        };
        let padding = key_width - label.chars().count() + 2;
        text.push_str(&label);
        text.extend(std::iter::repeat_n(' ', padding));
        text.push_str(value);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|cell| (*cell).to_owned()).collect()
    }

    #[test]
    fn columns_are_padded_like_crictl_and_lines_do_not_end_in_spaces() {
        let text = render_table(
            &["IMAGE", "TAG", "IMAGE ID", "SIZE"],
            &[
                row(&[
                    "docker.io/library/busybox",
                    "latest",
                    "3f57d9401f8d4",
                    "2.16MB",
                ]),
                row(&["registry.k8s.io/pause", "3.10", "873ed75102791", "320kB"]),
            ],
        );
        let expected = "\
IMAGE                       TAG                 IMAGE ID            SIZE
docker.io/library/busybox   latest              3f57d9401f8d4       2.16MB
registry.k8s.io/pause       3.10                873ed75102791       320kB
";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_table_without_rows_is_its_header() {
        assert_eq!(render_table(&["A", "B"], &[]), "A                   B\n");
    }

    #[test]
    fn key_values_align_and_empty_keys_continue_a_list() {
        let text = render_key_values(&[
            ("ID", "sha256:abc".to_owned()),
            ("Repo tags", "a:1".to_owned()),
            ("", "b:2".to_owned()),
            ("Size", "7.2MB".to_owned()),
        ]);
        let expected = "\
ID:         sha256:abc
Repo tags:  a:1
            b:2
Size:       7.2MB
";
        assert_eq!(text, expected);
    }
}

//! Rebuilding the derived indexes (the reverse name index and the state index)
//! from the tables they mirror, for `fsck --repair`. Both indexes are pure
//! functions of `references` and `images`, so a rebuild loses nothing.

use redb::{ReadableMultimapTable, ReadableTable};

use crate::metadata::error::MetadataError;
use crate::metadata::read;
use crate::metadata::tables::{IMAGE_NAMES, IMAGES, IMAGES_BY_STATE, REFERENCES};
use crate::metadata::write::WriteTxn;

type Storage = MetadataError;

impl WriteTxn {
    /// Replaces both indexes with what `references` and `images` say.
    pub fn rebuild_indexes(&mut self) -> Result<(), MetadataError> {
        self.changed_all_images = true;
        let names: Vec<(String, String)> = {
            let references = self.table(REFERENCES)?;
            let mut pairs = Vec::new();
            for entry in references
                .iter()
                .map_err(Storage::storage("scan references"))?
            {
                let (key, value) = entry.map_err(Storage::storage("scan references"))?;
                let image_id = read::decode_reference(key.value(), value.value())?;
                pairs.push((image_id.to_string(), key.value().to_owned()));
            }
            pairs
        };
        let states: Vec<(String, String)> = {
            let images = self.table(IMAGES)?;
            let mut pairs = Vec::new();
            for entry in images.iter().map_err(Storage::storage("scan images"))? {
                let (key, value) = entry.map_err(Storage::storage("scan images"))?;
                let image = read::decode_image(key.value(), value.value())?;
                pairs.push((image.state.as_str().to_owned(), key.value().to_owned()));
            }
            pairs
        };
        for (definition, pairs, what) in [
            (IMAGE_NAMES, names, "rebuild name index"),
            (IMAGES_BY_STATE, states, "rebuild state index"),
        ] {
            let mut index = self.multimap(definition)?;
            let keys: Vec<String> = index
                .iter()
                .map_err(Storage::storage(what))?
                .map(|entry| entry.map(|(key, _)| key.value().to_owned()))
                .collect::<Result<_, _>>()
                .map_err(Storage::storage(what))?;
            for key in keys {
                index
                    .remove_all(key.as_str())
                    .map_err(Storage::storage(what))?;
            }
            for (key, value) in pairs {
                index
                    .insert(key.as_str(), value.as_str())
                    .map_err(Storage::storage(what))?;
            }
        }
        Ok(())
    }
}

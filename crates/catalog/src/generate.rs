//! A synthetic catalog for benchmarks: plausible titles, authors, dates and descriptions built from
//! word lists, the same books for the same seed.

use std::io::Write;

use chrono::NaiveDate;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::read::Format;

/// A generated book, as written to a catalog file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeneratedBook {
    pub title: String,
    pub author: String,
    pub published_at: NaiveDate,
    pub description: String,
}

/// An endless, deterministic stream of generated books.
pub struct Generator {
    rng: ChaCha8Rng,
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn pick(&mut self, words: &[&'static str]) -> &'static str {
        words.choose(&mut self.rng).copied().unwrap_or("")
    }

    /// A name such as "Eleanor Ashbury": a first name and a surname made of two syllables, which
    /// gives tens of thousands of distinct authors.
    pub fn author(&mut self) -> String {
        let first = self.pick(FIRST_NAMES);
        let head = self.pick(SURNAME_HEADS);
        let tail = self.pick(SURNAME_TAILS);
        format!("{first} {head}{tail}")
    }

    /// A place such as "Ravenshaven" or "Calder Vale".
    pub fn place(&mut self) -> String {
        let head = self.pick(PLACE_HEADS);
        let tail = self.pick(PLACE_TAILS);
        format!("{head}{tail}")
    }

    pub fn title(&mut self) -> String {
        let adj = capitalize(self.pick(ADJECTIVES));
        let noun = capitalize(self.pick(NOUNS));
        let other = capitalize(self.pick(NOUNS));
        let place = self.place();
        let person = capitalize(self.pick(OCCUPATIONS));
        let first = self.pick(FIRST_NAMES);
        let theme = capitalize(self.pick(THEMES));
        match self.rng.random_range(0..12) {
            0 => format!("The {adj} {noun}"),
            1 => format!("The {noun} of {place}"),
            2 => format!("{noun} and {other}"),
            3 => format!("The {person}'s {noun}"),
            4 => format!("{first} and the {adj} {noun}"),
            5 => format!("A {noun} in {place}"),
            6 => format!("{adj} {noun}s"),
            7 => format!("The Last {person} of {place}"),
            8 => format!("{theme} at {place}"),
            9 => format!("The {noun} {person}"),
            10 => format!("{first}'s {adj} {noun}"),
            _ => format!("Of {theme} and {other}"),
        }
    }

    pub fn description(&mut self) -> String {
        let person = self.pick(OCCUPATIONS);
        let adj = self.pick(ADJECTIVES);
        let adj2 = self.pick(ADJECTIVES);
        let place = self.place();
        let verb = self.pick(VERBS);
        let noun = self.pick(NOUNS);
        let noun2 = self.pick(NOUNS);
        let theme = self.pick(THEMES);
        let theme2 = self.pick(THEMES);
        let other = self.pick(OCCUPATIONS);
        let first = match self.rng.random_range(0..8) {
            0 => format!("A {adj} {person} from {place} {verb} a {adj2} {noun}."),
            1 => format!("In {place}, a {person} {verb} the {noun} that {adj} families have guarded for generations."),
            2 => format!("When a {adj} {noun} arrives in {place}, a young {person} {verb} everything they believed."),
            3 => format!("Set in {place}, this {adj} tale follows a {person} who {verb} a {noun}."),
            4 => format!("Nobody in {place} expects the {person} to notice the {adj} {noun}, least of all the {other}."),
            5 => format!("After years abroad, a {person} returns to {place} and {verb} a {adj2} {noun}."),
            6 => format!("The {other} and the {person} of {place} share one {adj} {noun} and a grudge."),
            _ => format!("Told in letters, this novel of {place} shows a {person} who {verb} the {noun}."),
        };
        let second = match self.rng.random_range(0..8) {
            0 => format!("A story of {theme} and {theme2}, told with {adj2} wit."),
            1 => format!("Between the {noun2} and the {noun}, {theme} has its price."),
            2 => format!("It is a {adj2} meditation on {theme}."),
            3 => format!("The {noun2} will test their {theme} to the end."),
            4 => format!("What begins with {theme} ends in {theme2}."),
            5 => format!("A {adj2} comedy of {theme}, with a {noun2} at its heart."),
            6 => format!("Readers will remember its {adj2} {noun2} long after the last page."),
            _ => format!("Few books weigh {theme} against {theme2} with so {adj2} a hand."),
        };
        format!("{first} {second}")
    }

    pub fn published_at(&mut self) -> NaiveDate {
        let year = self.rng.random_range(1600..=2024);
        let day = self.rng.random_range(1..=365);
        NaiveDate::from_yo_opt(year, day).unwrap_or(NaiveDate::MIN)
    }

    pub fn book(&mut self) -> GeneratedBook {
        GeneratedBook {
            title: self.title(),
            author: self.author(),
            published_at: self.published_at(),
            description: self.description(),
        }
    }
}

impl Iterator for Generator {
    type Item = GeneratedBook;
    fn next(&mut self) -> Option<GeneratedBook> {
        Some(self.book())
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Writes `count` generated books for `seed` to `out` in `format`.
pub fn write(out: impl Write, format: Format, count: u64, seed: u64) -> std::io::Result<()> {
    let books = Generator::new(seed).take(usize::try_from(count).unwrap_or(usize::MAX));
    match format {
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(out);
            for book in books {
                csv.serialize(book)?;
            }
            csv.flush()
        }
        Format::Jsonl => {
            let mut out = std::io::BufWriter::new(out);
            for book in books {
                serde_json::to_writer(&mut out, &book)?;
                out.write_all(b"\n")?;
            }
            out.flush()
        }
    }
}

const FIRST_NAMES: &[&str] = &[
    "Ada", "Agnes", "Albert", "Alice", "Amelia", "Arthur", "Beatrice", "Benjamin", "Bernard",
    "Caroline", "Catherine", "Cecil", "Charles", "Charlotte", "Clara", "Cornelius", "Daniel",
    "Dorothy", "Edgar", "Edith", "Edmund", "Edward", "Eleanor", "Elias", "Eliza", "Emily",
    "Ernest", "Esther", "Evelyn", "Felix", "Florence", "Frances", "Frederick", "George",
    "Georgiana", "Gilbert", "Grace", "Harriet", "Henry", "Hester", "Hugh", "Ida", "Isaac",
    "Isabel", "Jacob", "James", "Jane", "Jasper", "Josephine", "Julia", "Laura", "Leonard",
    "Lillian", "Louisa", "Lucy", "Lydia", "Mabel", "Margaret", "Marian", "Martha", "Matilda",
    "Maud", "Nathaniel", "Nora", "Oliver", "Olive", "Oscar", "Percy", "Philip", "Rachel",
    "Ralph", "Rebecca", "Rosalind", "Rupert", "Ruth", "Samuel", "Sarah", "Sebastian", "Sophia",
    "Susannah", "Theodore", "Thomas", "Tobias", "Ursula", "Victor", "Violet", "Walter",
    "Wilfred", "William", "Winifred", "Adela", "Alfred", "Ambrose", "Anselm", "Augusta",
    "Barnaby", "Basil", "Bertha", "Blanche", "Cassandra", "Cedric", "Clement", "Constance",
    "Cyril", "Delia", "Dinah", "Dorian", "Edwin", "Effie", "Elspeth", "Emmeline", "Enid",
    "Eustace", "Fanny", "Fergus", "Gideon", "Gwendolen", "Hannah", "Horace", "Ivo", "Jemima",
    "Jerome", "Kit", "Leopold", "Letitia", "Lionel", "Lorna", "Magnus", "Maisie", "Miriam",
    "Montague", "Myra", "Neville", "Octavia", "Orlando", "Pamela", "Peregrine", "Phoebe",
    "Quentin", "Rowena", "Selina", "Silas", "Stella", "Sybil", "Tabitha", "Thaddeus", "Una",
    "Vera", "Wallace", "Xavier", "Yvette", "Zachary", "Zillah",
];

const SURNAME_HEADS: &[&str] = &[
    "Ash", "Black", "Bram", "Brook", "Cald", "Carr", "Clay", "Crom", "Dal", "Dun", "East",
    "Fair", "Fen", "Fox", "Gold", "Grey", "Hal", "Hart", "Haw", "Hol", "Kings", "Lang", "Lock",
    "Marl", "Mid", "Mor", "North", "Oak", "Pen", "Quill", "Red", "Ros", "Rush", "Sel", "Sher",
    "Stan", "Stone", "Thorn", "Wal", "West", "Whit", "Win", "Wood", "Wyn", "Ald", "Bel", "Brad",
    "Chad", "Cran", "Elm", "Gar", "Heath", "Kel", "Lind", "Mel", "Nor", "Pem", "Rad", "Sand",
    "Tal", "Ux", "Ver", "War", "Yar",
];

const SURNAME_TAILS: &[&str] = &[
    "bury", "by", "combe", "cott", "dale", "den", "don", "ey", "field", "ford", "gate", "grave",
    "ham", "hurst", "ing", "ley", "lock", "low", "mere", "more", "ridge", "shaw", "stead",
    "stone", "ton", "well", "wick", "win", "wood", "worth", "brook", "castle", "cliff", "croft",
    "holm", "holt", "hope", "land", "mont", "more", "nell", "port", "ster", "thwaite", "vale",
];

const ADJECTIVES: &[&str] = &[
    "ancient", "amber", "bitter", "black", "blind", "bright", "broken", "burning", "careless",
    "crimson", "crooked", "cruel", "dark", "distant", "drowned", "dusty", "empty", "endless",
    "faithful", "fallen", "final", "forgotten", "fragile", "frozen", "gentle", "gilded",
    "glass", "golden", "grey", "haunted", "hidden", "hollow", "honest", "idle", "iron",
    "ivory", "jealous", "lonely", "lost", "lucky", "midnight", "mirrored", "narrow",
    "northern", "painted", "pale", "patient", "quiet", "restless", "rising", "royal", "ruined",
    "scarlet", "secret", "shattered", "silent", "silver", "sleeping", "small", "southern",
    "stolen", "strange", "sunken", "tender", "twisted", "unquiet", "velvet", "wandering",
    "weary", "whispering", "wild", "wicked", "wooden", "wounded", "young", "absent", "azure",
    "barren", "blessed", "bold", "brazen", "brittle", "callous", "candid", "celestial",
    "cherished", "clouded", "copper", "crystal", "cursed", "daring", "deathless", "desolate",
    "devoted", "dim", "drifting", "eager", "eastern", "elusive", "emerald", "enchanted",
    "errant", "eternal", "exiled", "feverish", "fierce", "fleeting", "foolish", "foreign",
    "fortunate", "gallant", "ghostly", "gleaming", "grim", "hallowed", "heavy", "humble",
    "hungry", "icy", "infinite", "innocent", "invisible", "jagged", "jubilant", "kindly",
    "lavender", "leaden", "lingering", "luminous", "marble", "melancholy", "merciful", "misty",
    "molten", "mournful", "mute", "noble", "obscure", "ochre", "orphaned", "perilous",
    "pious", "placid", "proud", "radiant", "ragged", "reckless", "remote", "rustic", "sacred",
    "savage", "shadowed", "sharp", "shining", "shy", "slender", "smouldering", "solemn",
    "sombre", "splendid", "steadfast", "stormy", "sullen", "swift", "tarnished", "tattered",
    "trembling", "troubled", "unbroken", "unseen", "vain", "vanished", "verdant", "vigilant",
    "violet", "wary", "western", "wistful", "withered", "woven", "yearning", "zealous",
];

const NOUNS: &[&str] = &[
    "abbey", "anchor", "archive", "arrow", "bargain", "bell", "bridge", "candle", "captain",
    "castle", "cathedral", "chronicle", "city", "clock", "compass", "confession", "country",
    "covenant", "crown", "dagger", "daughter", "debt", "diary", "door", "dream", "empire",
    "estate", "exile", "fire", "forest", "fortune", "garden", "ghost", "harbour", "harvest",
    "heir", "highway", "horizon", "house", "inheritance", "island", "journey", "key", "kingdom",
    "labyrinth", "lamp", "lantern", "legacy", "letter", "lighthouse", "manor", "map",
    "marriage", "meadow", "memory", "mill", "mirror", "moor", "mountain", "oath", "orchard",
    "painting", "pilgrim", "portrait", "promise", "prophecy", "quarrel", "rebellion", "river",
    "road", "rose", "ruin", "shadow", "ship", "shore", "silence", "sister", "song", "storm",
    "stranger", "summer", "sword", "tide", "tower", "treasure", "valley", "voyage", "war",
    "widow", "wind", "witness", "wolf", "acorn", "alchemy", "almanac", "altar", "amulet",
    "archer", "armada", "atlas", "aviary", "ballad", "banner", "barge", "bastion", "beacon",
    "birthright", "blizzard", "bloodline", "boathouse", "bonfire", "bookshop", "boundary",
    "brigand", "brother", "cabinet", "canal", "caravan", "carnival", "cartwheel", "cellar",
    "chapel", "chariot", "chess", "chimney", "cipher", "citadel", "cliff", "cloister",
    "coachman", "comet", "conspiracy", "corridor", "cottage", "courtship", "cousin", "crossing",
    "crow", "crucible", "dancer", "dawn", "deluge", "desert", "dowry", "drought", "duchess",
    "dynasty", "eclipse", "elegy", "ember", "emissary", "engine", "epitaph", "errand",
    "evening", "expedition", "fable", "falcon", "famine", "feather", "ferry", "festival",
    "fiddle", "flood", "foundling", "fountain", "frontier", "gallery", "garrison", "gazette",
    "glacier", "governor", "granary", "grove", "guardian", "harp", "hearth", "hermit",
    "heron", "hourglass", "hunter", "icebound", "inkwell", "inn", "invention", "ivy",
    "jester", "jewel", "jubilee", "keeper", "kestrel", "kingfisher", "lagoon", "landlord",
    "ledger", "library", "locket", "lodestone", "loom", "magistrate", "mansion", "mariner",
    "marsh", "masquerade", "mermaid", "messenger", "meteor", "minstrel", "monastery",
    "moonlight", "morning", "nightingale", "nocturne", "observatory", "ocean", "orphan",
    "outlaw", "palace", "parchment", "parish", "passage", "pendulum", "pharaoh", "pier",
    "plague", "poet", "prince", "prisoner", "quarry", "queen", "quest", "raven", "regatta",
    "relic", "requiem", "reservoir", "riddle", "rooftop", "saint", "sanctuary", "scholar",
    "sentinel", "serpent", "shipwreck", "siege", "sketchbook", "smuggler", "sonnet",
    "sorceress", "spire", "stable", "staircase", "starlight", "steeple", "stormcloud",
    "sundial", "swan", "tapestry", "tavern", "telescope", "tempest", "testament", "thicket",
    "threshold", "thunder", "timber", "tinker", "torch", "tournament", "traveller", "trellis",
    "truce", "tutor", "twilight", "umbrella", "vagabond", "vineyard", "violin", "vow",
    "wager", "waltz", "warden", "waterfall", "weathervane", "wedding", "wharf", "wilderness",
    "willow", "windmill", "workshop", "wreath", "yew", "zephyr",
];

const PLACE_HEADS: &[&str] = &[
    "Ald", "Ash", "Barrow", "Black", "Bram", "Calder", "Carrick", "Dun", "East", "Elms",
    "Fen", "Glen", "Grey", "Hallow", "Harrow", "Kings", "Lark", "Low", "Mar", "Merri", "North",
    "Oak", "Pember", "Ravens", "Red", "Rose", "Salt", "Silver", "Stone", "Thorn", "Wex",
    "Whit", "Winter", "Wynd", "Amber", "Bleak", "Cold", "Deep", "Fair", "Gold", "High",
    "Iron", "Long", "Mill", "Moss", "Pine", "Queens", "Shep", "Swan", "Wolf",
];

const PLACE_TAILS: &[&str] = &[
    "mere", "combe", "gate", "water", "holt", " Vale", "more", "wick", "worth", "hollow",
    "haven", "bridge", "spur", "moor", "bury", "ton", "cliffe", "brook", "marsh", "by",
    "field", "ford", "holme", "stead", " Sands", " Cross", " Hill", "dale", "minster", "port",
];

const OCCUPATIONS: &[&str] = &[
    "apothecary", "architect", "astronomer", "baker", "blacksmith", "bookseller", "cartographer",
    "clerk", "clockmaker", "doctor", "engineer", "ferryman", "fisherman", "gardener",
    "governess", "gunsmith", "innkeeper", "inspector", "judge", "lawyer", "librarian",
    "lighthouse keeper", "merchant", "midwife", "miner", "musician", "navigator", "painter",
    "physician", "pilot", "printer", "sailor", "schoolmaster", "scientist", "seamstress",
    "shepherd", "soldier", "surgeon", "tailor", "teacher", "vicar", "watchmaker", "weaver",
    "writer", "actress", "alchemist", "archivist", "auctioneer", "balloonist", "banker",
    "beekeeper", "bellringer", "botanist", "bricklayer", "butler", "chemist", "chorister",
    "coachbuilder", "cook", "cooper", "curate", "detective", "diplomat", "dressmaker",
    "explorer", "falconer", "forger", "glassblower", "goldsmith", "gravedigger", "harpist",
    "herbalist", "historian", "housekeeper", "jeweller", "journalist", "locksmith",
    "magician", "mapmaker", "mason", "milliner", "nurse", "organist", "pharmacist",
    "photographer", "postmistress", "potter", "publisher", "railwayman", "sculptor",
    "shipwright", "spy", "stonemason", "telegraphist", "thief", "translator", "typesetter",
];

const VERBS: &[&str] = &[
    "betrays", "buries", "chases", "confronts", "deciphers", "defends", "discovers", "escapes",
    "follows", "forgets", "guards", "hides", "inherits", "investigates", "loses", "maps",
    "mends", "questions", "reclaims", "remembers", "rescues", "restores", "searches for",
    "seeks", "steals", "uncovers", "wagers", "wakes", "wins", "abandons", "admires",
    "auctions", "awakens", "bargains for", "befriends", "builds", "catalogues", "charts",
    "conceals", "courts", "crosses", "curses", "destroys", "doubts", "dreams of", "forges",
    "gambles away", "haunts", "hunts", "imagines", "insults", "interrogates", "measures",
    "mourns", "paints", "pawns", "photographs", "plots against", "pursues", "ransoms",
    "rebuilds", "recovers", "refuses", "rejects", "repairs", "ruins", "sails toward",
    "shelters", "smuggles", "studies", "surrenders", "tames", "translates", "trusts",
    "unearths", "unmasks", "visits", "welcomes",
];

const THEMES: &[&str] = &[
    "ambition", "betrayal", "belonging", "courage", "duty", "envy", "exile", "faith",
    "forgiveness", "freedom", "friendship", "grief", "guilt", "honour", "hope", "identity",
    "innocence", "justice", "love", "loyalty", "madness", "memory", "pride", "redemption",
    "revenge", "sacrifice", "survival", "truth", "vanity", "wonder", "avarice", "chance",
    "class", "conscience", "curiosity", "deceit", "desire", "destiny", "devotion", "doubt",
    "fear", "folly", "fortitude", "gratitude", "greed", "homecoming", "humility", "jealousy",
    "kinship", "longing", "mercy", "obsession", "patience", "power", "prejudice", "regret",
    "rivalry", "solitude", "temptation", "tradition",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::read;

    #[test]
    fn the_same_seed_gives_the_same_books() {
        let a: Vec<_> = Generator::new(7).take(50).collect();
        let b: Vec<_> = Generator::new(7).take(50).collect();
        let c: Vec<_> = Generator::new(8).take(50).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn generated_files_import_without_rejections_in_both_formats() {
        for format in [Format::Csv, Format::Jsonl] {
            let mut out = Vec::new();
            write(&mut out, format, 500, 1).unwrap();
            let rows: Vec<_> = read(std::io::Cursor::new(out), format)
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            assert_eq!(rows.len(), 500);
            assert!(rows.iter().all(Result::is_ok), "{format:?}");
        }
    }
}

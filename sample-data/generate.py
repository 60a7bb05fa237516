#!/usr/bin/env python3
"""Generate sample-data/users.csv: 100 synthetic HR records for the xaas demo and tests.

The columns follow the DynamoDB table of Okta's "Anything as a Source" Workflows walkthrough
(seed 002): id (the email), active, title, first_name, last_name, street_number,
street_name, city, state, country (ISO 3166-1 alpha-2), postcode, email, phone, cell, dob.

Everything is made up: names are drawn at random from per-country lists and combined, and
all email addresses use the reserved example.com/.org/.net domains. The output is
deterministic (fixed seed, stdlib only), so re-running this script reproduces the committed
file byte for byte:

    python3 sample-data/generate.py > sample-data/users.csv

Counts are fixed on purpose (sample-data/README.md documents them, and the demo's report
must match): 100 users, of which exactly INACTIVE are deactivated.
"""

import csv
import random
import sys
import unicodedata

SEED = 2024
TOTAL = 100
INACTIVE = 12

# country: (first names, last names, [(city, state, street names)], postcode format)
COUNTRIES = {
    "ES": (
        ["Albert", "Lucía", "José", "Begoña", "Íñigo", "Nuria", "Martín", "Ainhoa"],
        ["Gambaro", "Muñoz", "Peña", "Ibáñez", "Castaño", "Ruiz", "Gómez"],
        [("Las Palmas de Gran Canaria", "Canarias", ["Calle del Arenal", "Avenida de Mesa y López"]),
         ("Sevilla", "Andalucía", ["Calle Sierpes", "Avenida de la Constitución, Local 2"]),
         ("A Coruña", "Galicia", ["Rúa Real", "Calle Juana de Vega"])],
        "#####",
    ),
    "FR": (
        ["Zoé", "Hélène", "François", "Jérôme", "Agnès", "Mathéo", "Anaïs"],
        ["Lefèvre", "Bérenger", "Garçon", "Dupré", "Moreau", "Rousseau"],
        [("Lyon", "Auvergne-Rhône-Alpes", ["Rue de la République", "Quai Saint-Antoine, Bât. C"]),
         ("Nantes", "Pays de la Loire", ["Rue Crébillon", "Boulevard Guist'hau"])],
        "#####",
    ),
    "DE": (
        ["Jürgen", "Björn", "Lena", "Günther", "Mia", "Jörg", "Käthe"],
        ["Müller", "Schröder", "Weiß", "Köhler", "Becker", "Größ"],
        [("München", "Bayern", ["Maximilianstraße", "Leopoldstraße"]),
         ("Köln", "Nordrhein-Westfalen", ["Hohe Straße", "Ehrenstraße, Hinterhaus"])],
        "#####",
    ),
    "NO": (
        ["Øystein", "Åse", "Sølvi", "Lars", "Ingrid", "Bjørn"],
        ["Sørensen", "Håland", "Løvås", "Berg", "Dæhlie"],
        [("Bergen", "Vestland", ["Bryggen", "Strandgaten"]),
         ("Tromsø", "Troms", ["Storgata", "Sjøgata"])],
        "####",
    ),
    "PL": (
        ["Łukasz", "Małgorzata", "Paweł", "Zofia", "Bożena", "Wojciech"],
        ["Wałęsa", "Kowalczyk", "Żółkiewski", "Nowak", "Wiśniewska"],
        [("Kraków", "Małopolskie", ["ulica Floriańska", "ulica Grodzka"]),
         ("Łódź", "Łódzkie", ["ulica Piotrkowska", "aleja Kościuszki, lok. 4"])],
        "##-###",
    ),
    "BR": (
        ["João", "Conceição", "Thiago", "Luíza", "Sebastião"],
        ["Gonçalves", "Araújo", "Simões", "Assunção", "Lima"],
        [("São Paulo", "São Paulo", ["Avenida Paulista", "Rua Augusta, conjunto 12"]),
         ("Belém", "Pará", ["Avenida Nazaré", "Travessa Quintino Bocaiúva"])],
        "#####-###",
    ),
    "US": (
        ["Emily", "Michael", "Grace", "Daniel", "Olivia", "Noah"],
        ["Johnson", "Carter", "Nguyen", "Brooks", "Ramirez"],
        [("Springfield", "Illinois", ["Maple Avenue", "Oak Street, Suite 200"]),
         ("Portland", "Oregon", ["Hawthorne Boulevard", "Division Street"])],
        "#####",
    ),
    "GB": (
        ["Oliver", "Amelia", "Harry", "Isla", "George"],
        ["Thompson", "O'Brien", "Davies", "Clarke", "Evans"],
        [("Leeds", "England", ["Briggate", "Kirkgate, Flat 3"]),
         ("Cardiff", "Wales", ["Queen Street", "Heol y Frenhines"])],
        "LS# #AA",
    ),
    "TR": (
        ["Çağla", "Gökhan", "Şule", "İlker", "Özge"],
        ["Yılmaz", "Öztürk", "Çelik", "Şahin", "Güneş"],
        [("İzmir", "İzmir", ["Kıbrıs Şehitleri Caddesi", "Alsancak Sokak"]),
         ("Ankara", "Ankara", ["Atatürk Bulvarı", "Tunalı Hilmi Caddesi, Daire 5"])],
        "#####",
    ),
    "IS": (
        ["Þórunn", "Guðmundur", "Sigríður", "Ævar"],
        ["Jónsdóttir", "Þorsteinsson", "Guðmundsdóttir"],
        [("Reykjavík", "Höfuðborgarsvæðið", ["Laugavegur", "Skólavörðustígur"])],
        "###",
    ),
}

TITLES = ["Mr", "Ms", "Mrs", "Dr"]
DOMAINS = ["example.com", "example.org", "example.net"]

# Letters that Unicode decomposition does not reduce to ASCII.
SPECIAL = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE",
                         "ß": "ss", "þ": "th", "Þ": "Th", "ð": "d", "Ð": "D", "ı": "i",
                         "'": ""})


def ascii_slug(s):
    """A lowercase ASCII version of a name, for the local part of an email address."""
    s = s.translate(SPECIAL)
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii")
    return "".join(c for c in s.lower() if c.isalnum() or c == "-")


def digits(rng, pattern):
    return "".join(str(rng.randrange(10)) if c == "#" else
                   chr(rng.randrange(65, 91)) if c == "A" else c for c in pattern)


def main():
    rng = random.Random(SEED)
    countries = sorted(COUNTRIES)
    inactive = set(rng.sample(range(TOTAL), INACTIVE))
    seen = set()
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["id", "active", "title", "first_name", "last_name", "street_number",
                  "street_name", "city", "state", "country", "postcode", "email", "phone",
                  "cell", "dob"])
    i = 0
    while i < TOTAL:
        country = countries[i % len(countries)]
        firsts, lasts, places, postcode = COUNTRIES[country]
        first, last = rng.choice(firsts), rng.choice(lasts)
        email = f"{ascii_slug(first)}.{ascii_slug(last)}@{rng.choice(DOMAINS)}"
        if email in seen:
            continue  # draw again: the id must be unique
        seen.add(email)
        city, state, streets = rng.choice(places)
        dob = (f"{rng.randrange(1958, 2004)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
               f"T{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"
               f".{rng.randrange(1000):03d}Z")
        out.writerow([
            email,
            "false" if i in inactive else "true",
            rng.choice(TITLES),
            first,
            last,
            str(rng.randrange(1, 9999)),
            rng.choice(streets),
            city,
            state,
            country,
            digits(rng, postcode),
            email,
            digits(rng, "###-###-###"),
            digits(rng, "###-###-###"),
            dob,
        ])
        i += 1


if __name__ == "__main__":
    main()

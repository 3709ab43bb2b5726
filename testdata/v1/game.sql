-- A v1.0-style game database for MariaDB 10.11 (MySQL 8 lacks the seq_1_to_N tables used to
-- fill it), with the types a migration meets: unsigned ids, tinyint(1), decimal(65,30), latin1
-- text, utf8mb4 with emoji, enum and set, json, zero dates, time over 24 hours, year, bit,
-- binary, geometry, a composite key and a table without a primary key. Deterministic: the same
-- rows every time, dated relative to when it is loaded (three years of history).
--
--   mariadb -uroot -h127.0.0.1 -e 'CREATE DATABASE v1game'
--   mariadb -uroot -h127.0.0.1 v1game < testdata/v1/game.sql

SET NAMES utf8mb4;
SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION';
SET @now = NOW(6);

CREATE TABLE players (
  player_id int unsigned NOT NULL PRIMARY KEY,
  nickname varchar(32) CHARACTER SET utf8mb4 NOT NULL,
  home_city varchar(32) CHARACTER SET latin1 NOT NULL,
  region enum('bj', 'sh', 'gz') NOT NULL,
  platforms set('ios', 'android', 'pc') NOT NULL,
  is_vip tinyint(1) NOT NULL,
  birthday date NOT NULL DEFAULT '0000-00-00',
  created_at datetime(6) NOT NULL,
  last_login timestamp(6) NULL,
  flags bit(8) NOT NULL
) ENGINE=InnoDB;

INSERT INTO players
SELECT seq,
       CONCAT(ELT(1 + seq % 5, 'Dragon', '小龙', 'Nova', '🐉Ace', 'Müller'), seq),
       ELT(1 + seq % 4, 'Zürich', 'São Paulo', 'Beijing', 'Montréal'),
       ELT(1 + seq % 3, 'bj', 'sh', 'gz'),
       ELT(1 + seq % 4, 'ios', 'android', 'ios,pc', ''),
       seq % 9 = 0,
       IF(seq % 11 = 0, '0000-00-00', DATE('1980-01-01') + INTERVAL (seq * 37) % 9000 DAY),
       @now - INTERVAL 3 * 365 DAY + INTERVAL (seq * 7919) % (3 * 365 * 86400) SECOND,
       IF(seq % 13 = 0, NULL, @now - INTERVAL (seq * 104729) % (2 * 365 * 86400) SECOND),
       seq % 256
FROM seq_1_to_5000;

CREATE TABLE items (
  item_id smallint unsigned NOT NULL PRIMARY KEY,
  name varchar(64) NOT NULL,
  category enum('skin', 'weapon', 'boost', 'pet') NOT NULL,
  price_fen bigint unsigned NOT NULL,
  exchange_rate decimal(65,30) NOT NULL,
  icon varbinary(16) NOT NULL,
  released year NOT NULL,
  shop_location point NULL,
  added_at datetime NOT NULL
) ENGINE=InnoDB;

INSERT INTO items
SELECT seq,
       CONCAT(ELT(1 + seq % 4, 'Skin', 'Blade', 'Boost', 'Pet'), ' #', seq),
       ELT(1 + seq % 4, 'skin', 'weapon', 'boost', 'pet'),
       IF(seq = 1, 18446744073709551615, seq * 100),
       CONCAT('0.', LPAD(seq, 30, '0')),
       UNHEX(MD5(seq)),
       2019 + seq % 7,
       IF(seq % 5 = 0, NULL, POINT(116 + seq / 100, 39 + seq / 1000)),
       @now - INTERVAL (seq * 3) DAY
FROM seq_1_to_200;

CREATE TABLE purchases (
  purchase_id bigint unsigned NOT NULL PRIMARY KEY,
  player_id int unsigned NOT NULL,
  item_id smallint unsigned NOT NULL,
  quantity tinyint unsigned NOT NULL,
  price decimal(12,2) NOT NULL,
  currency char(3) NOT NULL,
  refunded tinyint(1) NOT NULL,
  purchased_at datetime(6) NOT NULL,
  settled_on date NULL,
  meta json NULL,
  KEY (player_id)
) ENGINE=InnoDB;

INSERT INTO purchases
SELECT seq,
       1 + (seq * 31) % 5000,
       1 + (seq * 17) % 200,
       1 + seq % 3,
       ((seq * 97) % 100000) / 100,
       ELT(1 + seq % 3, 'CNY', 'USD', 'EUR'),
       seq % 50 = 0,
       @now - INTERVAL 3 * 365 DAY + INTERVAL seq * 473 SECOND,
       IF(seq % 17 = 0, '0000-00-00', DATE(@now - INTERVAL 3 * 365 DAY + INTERVAL seq * 473 SECOND)),
       IF(seq % 4 = 0, NULL, JSON_OBJECT('channel', ELT(1 + seq % 3, 'app', 'web', 'promo'), 'bundle', seq % 7 = 0))
FROM seq_1_to_200000;

CREATE TABLE friendships (
  player_id int unsigned NOT NULL,
  friend_id int unsigned NOT NULL,
  since datetime NOT NULL,
  intimacy smallint NOT NULL,
  PRIMARY KEY (player_id, friend_id)
) ENGINE=InnoDB;

INSERT IGNORE INTO friendships
SELECT 1 + seq % 5000, 1 + (seq * 7 + seq DIV 5000) % 5000,
       @now - INTERVAL (seq * 4729) % (3 * 365 * 86400) SECOND,
       CAST(seq % 1000 AS SIGNED) - 100
FROM seq_1_to_20000
WHERE 1 + seq % 5000 <> 1 + (seq * 7 + seq DIV 5000) % 5000;

-- The login log has no primary key (v1.0 appended to it and never read it back).
CREATE TABLE login_log (
  player_id int unsigned NOT NULL,
  logged_in_at datetime(3) NOT NULL,
  session_length time NOT NULL,
  client_ip varbinary(16) NOT NULL
) ENGINE=InnoDB;

INSERT INTO login_log
SELECT 1 + (seq * 13) % 5000,
       @now - INTERVAL 3 * 365 DAY + INTERVAL seq * 1891 SECOND,
       SEC_TO_TIME((seq * 37) % 200000),
       UNHEX(LPAD(HEX(seq), 8, '0'))
FROM seq_1_to_50000;

// The PostgreSQL JDBC driver (pgjdbc, Debian's libpostgresql-jdbc-java) against
// `gamelake serve --pg`: what DBeaver, DataGrip and Metabase-like JVM tools do on connect and
// for a query. Prints one line per fact; run with `java -cp postgresql.jar PgJdbcProbe.java URL`.
import java.sql.*;

public class PgJdbcProbe {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], "anyone", "x")) {
            DatabaseMetaData md = c.getMetaData();
            System.out.println("product|" + md.getDatabaseProductName() + "|" + md.getDatabaseProductVersion());
            try (ResultSet rs = md.getTables(null, "game", "%", new String[] {"TABLE"})) {
                while (rs.next()) System.out.println("table|" + rs.getString("TABLE_SCHEM") + "." + rs.getString("TABLE_NAME"));
            }
            try (ResultSet rs = md.getColumns(null, "game", "players", "%")) {
                while (rs.next()) System.out.println("column|" + rs.getString("COLUMN_NAME") + "|" + rs.getString("TYPE_NAME"));
            }
            String sql = "SELECT player_id, name, spent, joined, tags, active, score FROM game.players WHERE player_id >= ? ORDER BY player_id";
            try (PreparedStatement p = c.prepareStatement(sql)) {
                p.setLong(1, 1);
                try (ResultSet rs = p.executeQuery()) {
                    int n = rs.getMetaData().getColumnCount();
                    while (rs.next()) {
                        StringBuilder row = new StringBuilder("row");
                        for (int i = 1; i <= n; i++) {
                            Object v = rs.getObject(i);
                            if (v instanceof Timestamp t) v = t.toInstant();
                            if (v instanceof Array a) v = java.util.Arrays.toString((Object[]) a.getArray());
                            row.append('|').append(v);
                        }
                        System.out.println(row);
                    }
                }
            }
        }
    }
}
